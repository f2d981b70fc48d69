"""What a desktop session reaches of the client's machine (reference §4.5-4.8).

* The slave channel (``vma.slave.enable``: nxagent ``slave=1``): nxagent runs
  ``NX_SLAVE_CMD`` for each channel the client opens; ours hands the channel
  to this VMA, which serves QVD's slave endpoints (``qvd.vma.slave``) with the
  slave key of the session's last ``x_start``.  ``slave.conf`` still gets the
  key (readable by the session's account only), for a ``vma.slave.command``
  of one's own such as QVD 4's.
* Sound (``vma.audio.enable``: ``media=1``): ``qvd.vma.audio``.
* Printing (``vma.printing.enable`` and the client's
  ``qvd.client.printing.enabled``: ``cups=<2000 + display>``): nxagent
  listens there for IPP and nxproxy passes it to the client's CUPS; the
  session's ``CUPS_SERVER`` points there, so ``lp`` and every CUPS program
  of the desktop print on the client's printers.

When the session is suspended or ends, the sound stops and the client's
folders leave ``~/Redirected``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.logger import Logger

from qvd.http.server import QVDHTTPServerFactory
from qvd.slave import handoff
from qvd.slave.routes import SlaveHandler
from qvd.vma.audio import SessionAudio
from qvd.vma.provisioning import SessionAccount
from qvd.vma.settings import VMASettings
from qvd.vma.slave import SessionContext, VMSlaveEndpoints, shares_dir, unmount_shares

log = Logger()

_MEDIA = re.compile(r"Info: Listening to multimedia connections on port '(?:tcp:[^:']*:)?(\d+)'")
SLAVE_PORT_OFFSET = 11000  # nxcomp's default slave port on nxagent's side: 11000 + display
CUPS_PORT_OFFSET = 2000


class SessionChannels:
    def __init__(self, reactor: Any, settings: VMASettings):
        self.reactor = reactor
        self.settings = settings
        self.audio = SessionAudio(reactor, settings)
        self.endpoints = VMSlaveEndpoints(reactor, settings, lambda: self.context)
        self.context: Optional[SessionContext] = None
        self.key: Optional[str] = None
        self._listener: Optional[handoff.HandOffListener] = None
        self._pending: set[Deferred] = set()
        self._media_port: Optional[int] = None

    @property
    def cups_port(self) -> int:
        return CUPS_PORT_OFFSET + self.settings.display

    @property
    def slave_port(self) -> int:
        return SLAVE_PORT_OFFSET + self.settings.display

    # -- the VMA's life -----------------------------------------------------
    def start(self) -> None:
        """Serve slave channels (unless ``vma.slave.command`` names another server)."""
        s = self.settings
        if not s.slave or s.slave_command:
            return
        handoff.write_script(s.slave_handoff, s.slave_socket, "qvd-vma")
        handler = SlaveHandler(self.endpoints.routes(), lambda: self.key)
        self._listener = handoff.HandOffListener(self.reactor,
                                                 QVDHTTPServerFactory(handler, self.reactor))
        self._listener.listen(s.slave_socket)

    def stop(self) -> Deferred:
        """Stop serving; fires once the last clean-up has run."""
        listener, self._listener = self._listener, None
        waits = [self.audio.stop()] + list(self._pending)
        if listener is not None:
            waits.append(maybeDeferred(listener.stop))
        return DeferredList(waits)

    # -- a session ----------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """What the session's programs need to find the channels."""
        command = self.settings.slave_command or self.settings.slave_handoff
        env = {"NX_SLAVE_CMD": command, "QVD_SLAVE_CMD": command}
        env.update(self.audio.environment())
        if self.settings.printing:
            env["CUPS_SERVER"] = f"127.0.0.1:{self.cups_port}"
        return env

    def session_params(self, params: Mapping[str, Optional[str]]) -> None:
        """At ``x_start``: the new slave key, and ``printing.conf`` for hooks and tools."""
        key = params.get("qvd.slave.key")
        if key:
            self.key = key
            self._write_private(self.settings.slave_config_path, key)
        printing = self.settings.printing and (params.get("qvd.client.printing.enabled")
                                               or "0") not in ("", "0")
        lines = [f"qvd.printing.enabled = {int(printing)}",
                 f"qvd.printing.port = {self.cups_port}",
                 f"qvd.slave.port = {self.slave_port}"]
        lines += [f"{k} = {params[k]}" for k in ("qvd.client.os", "qvd.client.printing.flavor")
                  if params.get(k)]
        with open(self.settings.printing_config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def launched(self, account: SessionAccount, env: Mapping[str, str]) -> None:
        """The session's programs run as ``account`` with ``env``."""
        self.context = SessionContext(account, dict(env))
        if account.uid is None:
            return
        for path in (self.settings.slave_config_path, self.settings.slave_socket):
            try:
                os.chown(path, account.uid, account.gid)
            except FileNotFoundError:
                pass

    def output_line(self, line: str) -> bool:
        """True if the nxagent line was about a channel (and is handled)."""
        match = _MEDIA.match(line)
        if not match:
            return False
        self._media_port = int(match.group(1))
        return True

    def state_changed(self, raw: str) -> None:
        """nxagent's session state.  Sound starts once the session is up: a channel
        opened before nxagent has its display takes the channel the display needs,
        and nxagent aborts the session."""
        if raw in ("started", "resumed"):
            port, self._media_port = self._media_port, None
            if port is not None and self.settings.audio and self.context is not None:
                self.audio.start(port, self.context.account, dict(self.context.env))
        elif raw == "suspended":
            self.suspended()

    def suspended(self) -> Deferred:
        """No client: no sound, and the client's folders leave the desktop."""
        self.audio.stop()
        context = self.context
        if (context is None or not self.settings.slave
                or not os.path.isdir(shares_dir(self.settings, context.account.home))):
            return succeed(None)
        d = unmount_shares(self.reactor, self.settings, context)
        d.addErrback(lambda f: log.warn("cannot unmount the shared folders: {error}",
                                        error=f.getErrorMessage()))
        self._pending.add(d)
        return d.addBoth(lambda result: self._pending.discard(d))

    def ended(self) -> Deferred:
        d = self.suspended()
        self.context = None
        return d

    def _write_private(self, path: str, text: str) -> None:
        """A file only the session's account (and root) may read."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            account = self.context.account if self.context is not None else None
            if account is not None and account.uid is not None:
                os.fchown(f.fileno(), account.uid, account.gid)
