"""This machine's PulseAudio, where nxproxy sends the desktop's sound (``media=``).

nxproxy forwards sound to a TCP port.  If ``PULSE_SERVER`` already names a
local TCP port, that one is used (as QVD's client does); otherwise the
client asks the user's PulseAudio (``pactl``) for a loopback listener on a
free port for this session, and removes it again at the end.  Without a
PulseAudio the session simply has no sound, and the user is told.
"""

from __future__ import annotations

import os
import re
from typing import Any, Generator, Mapping, Optional

from twisted.internet import defer, utils
from twisted.logger import Logger

from qvd.stream.sockets import free_port

log = Logger()

_TCP_SERVER = re.compile(r"(?:tcp:)?(?:localhost:|127\.0\.0\.1:)?(\d+)", re.ASCII)


def tcp_port(pulse_server: str) -> Optional[int]:
    """The port of a ``PULSE_SERVER`` that is a local TCP one (``tcp:localhost:4713``)."""
    match = _TCP_SERVER.fullmatch(pulse_server.strip())
    return int(match.group(1)) if match else None


class LocalSound:
    def __init__(self, pactl: str, env: Mapping[str, str] = os.environ):
        self.pactl = pactl
        self.env = dict(env)
        self.module: Optional[str] = None

    def _pactl(self, *args: str) -> defer.Deferred:
        return utils.getProcessOutputAndValue(self.pactl, args, env=self.env)

    @defer.inlineCallbacks
    def start(self) -> Generator[Any, Any, Optional[int]]:
        """The port for nxproxy's ``media=``, or None (no sound, the user was told why)."""
        given = tcp_port(self.env.get("PULSE_SERVER", ""))
        if given is not None:
            return given
        port = free_port()
        try:
            out, err, code = yield self._pactl(
                "load-module", "module-native-protocol-tcp", f"port={port}", "listen=127.0.0.1",
                "auth-anonymous=1")
        except OSError as e:
            out, err, code = b"", str(e).encode(), -1
        if code != 0:
            reason = err.decode("utf-8", "replace").strip() or f"{self.pactl} failed"
            log.warn("No sound: this machine's PulseAudio cannot be reached ({reason}).",
                     reason=reason)
            return None
        self.module = out.decode().strip()
        return port

    def stop(self) -> defer.Deferred:
        module, self.module = self.module, None
        if not module:
            return defer.succeed(None)
        d = self._pactl("unload-module", module)
        return d.addBoth(lambda _: None)
