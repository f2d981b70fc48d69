"""The VM side of the slave channel: QVD 4's ``qvd-vma-slaveserver`` endpoints.

Requests come from the client's end of the session (reference §4.8), each
with the session's slave key:

* ``PUT /shares/<client path>`` (``Upgrade: qvd:sftp/1.0[;charset=X]``): 101
  with ``X-QVD-Share-Ticket: <name>``, then sshfs in slave mode mounts the
  client's folder (the client runs ``sftp-server`` on its end) at
  ``~/Redirected/<name>``, ``<name>`` being the folder's last component;
* ``GET /shares/<VM path>`` (same ``Upgrade``): 101, then ``sftp-server -e``
  exports that folder of the VM to the client;
* ``POST /open/<path>`` with ``X-QVD-Share-Ticket``: opens
  ``~/Redirected/<ticket>/<path>`` on the desktop (``command.open_file``);
* ``POST /usbip`` (``Upgrade: qvd:usbip/1.0``): attaches a USB device the
  client exports (``qvd.vma.usbip``).

Everything touching the session's files runs as the session's account, so
a symlink the user planted cannot make the VMA (root) write elsewhere, and
the FUSE mounts belong to the user.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from qvd.http.server import Request, Response, SwitchProtocols
from qvd.slave.bridge import ProcessBridge, Program, run_program
from qvd.slave.routes import Route, inside, refused, share_name, upgrade
from qvd.vma import usbip
from qvd.vma.provisioning import SessionAccount
from qvd.vma.settings import VMASettings

log = Logger()

SFTP = "qvd:sftp/1.0"
FUSE_DEVICE = "/dev/fuse"
# as the session's account: make <shares>/<name> a fresh empty mount point
# (17: something is still there, e.g. a live mount of the same name)
PREPARE = ('set -e; mkdir -p -- "$1"; cd -- "$1"; '
           'if [ -e "$2" ] || [ -L "$2" ]; then rmdir -- "$2" 2>/dev/null || exit 17; fi; '
           'mkdir -- "$2"')
BUSY = 17
# as the session's account: lazily unmount what is mounted under <shares>, remove the
# empty mount points
UNMOUNT = ('cd -- "$1" 2>/dev/null || exit 0; for m in ./* ./.[!.]*; do [ -d "$m" ] || continue;'
           ' if mountpoint -q -- "$m"; then "$2" -u -z "$m"; fi; rmdir -- "$m" 2>/dev/null;'
           ' done; exit 0')


@dataclass(frozen=True)
class SessionContext:
    """The running desktop session: who it runs as and its environment."""

    account: SessionAccount
    env: Mapping[str, str]

    def program(self, argv: list[str], path: Optional[str] = None, name: str = "") -> Program:
        return Program(list(argv), dict(self.env), path or self.account.home,
                       self.account.uid, self.account.gid, name)


def shares_dir(settings: VMASettings, home: str) -> str:
    """``vma.user.shares.path`` (``~/Redirected``) for the session's home."""
    path = settings.shares_path
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    return posixpath.normpath(path)


def unmount_shares(reactor: Any, settings: VMASettings, context: SessionContext) -> Any:
    """At the end of a session: the client's folders leave the desktop (a Deferred)."""
    base = shares_dir(settings, context.account.home)
    return run_program(reactor, context.program(
        ["/bin/sh", "-c", UNMOUNT, "sh", base, settings.commands["fusermount"]],
        name="unmount shares"))


def fuse_usable(uid: Optional[int], gids: tuple[int, ...], device: str = FUSE_DEVICE) -> bool:
    """Can that account open /dev/fuse (libfuse3 does not fall back to fusermount)?"""
    if uid is None:
        return os.access(device, os.R_OK | os.W_OK)
    try:
        st = os.stat(device)
    except OSError:
        return False
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = stat.S_IRUSR | stat.S_IWUSR
    elif st.st_gid in gids:
        bits = stat.S_IRGRP | stat.S_IWGRP
    else:
        bits = stat.S_IROTH | stat.S_IWOTH
    return st.st_mode & bits == bits


class VMSlaveEndpoints:
    """The routes; ``context()`` is the session now (None: no desktop session)."""

    def __init__(self, reactor: Any, settings: VMASettings,
                 context: Callable[[], Optional[SessionContext]]):
        self.reactor = reactor
        self.settings = settings
        self.context = context

    def routes(self) -> list[Route]:
        return [
            Route("PUT", "/shares/", self.put_share),
            Route("GET", "/shares/", self.get_share),
            Route("POST", "/open/", self.open),
            Route("POST", "/usbip", self.usbip),
        ]

    def _session(self) -> Any:
        context = self.context()
        if context is None:
            return None, refused(503, "There is no desktop session in this virtual machine.")
        return context, None

    def _upgraded(self, request: Request, protocol: str) -> Any:
        """(refusal or None, the session, the charset asked for) of an Upgrade request."""
        bad, charset = upgrade(request, protocol)
        if bad is not None:
            return bad, None, None
        context, missing = self._session()
        return missing, context, charset

    def _holds(self, context: SessionContext, condition: str, path: str) -> Any:
        """Does ``test <condition> path`` hold for the session's account?  (A Deferred.)"""
        d = run_program(self.reactor, context.program(
            ["/bin/sh", "-c", f'test {condition} "$1"', "sh", path], name="test"))
        return d.addCallback(lambda result: result[0] == 0)

    def _command(self, name: str, context: SessionContext) -> Optional[str]:
        command = self.settings.commands[name]
        return shutil.which(command, path=context.env.get("PATH")) if command else None

    @inlineCallbacks
    def put_share(self, request: Request, rest: str):
        refusal, context, charset = self._upgraded(request, SFTP)
        if refusal is not None:
            return refusal
        name = share_name(rest)
        if name is None:
            return refused(400, f"No folder name in {rest!r}.")
        sshfs = self._command("sshfs", context)
        if sshfs is None:
            return refused(501, "Shared folders need sshfs in the virtual machine"
                                " (Debian package sshfs).")
        account = context.account
        if not fuse_usable(account.uid, tuple(os.getgrouplist(account.name, account.gid))
                           if account.uid is not None else ()):
            return refused(503, f"Shared folders need FUSE: {FUSE_DEVICE} is not usable by"
                                f" {account.name} (it must be mode 0666, as Debian sets it).")
        base = shares_dir(self.settings, account.home)
        code, output = yield run_program(self.reactor, context.program(
            ["/bin/sh", "-c", PREPARE, "sh", base, name], name="mount point"))
        if code == BUSY:
            return refused(409, f"{base}/{name} is in use (a folder of that name is shared).")
        if code != 0:
            return refused(500, f"Cannot make {base}/{name}: {output or code}.")
        if charset and charset.replace("-", "").upper() != "UTF8":
            log.warn("share {name}: charset {charset} is served as UTF-8", name=name,
                     charset=charset)
        argv = [sshfs, "qvd-client:", f"{base}/{name}", "-f", "-o", "slave",
                "-o", "idmap=user", *self.settings.sshfs_extra]
        log.info("mounting the client's {path} at {base}/{name}", path=rest, base=base, name=name)
        return SwitchProtocols([("X-QVD-Share-Ticket", name)],
                               ProcessBridge(self.reactor, context.program(argv, name="sshfs")))

    @inlineCallbacks
    def get_share(self, request: Request, rest: str):
        refusal, context, _ = self._upgraded(request, SFTP)
        if refusal is not None:
            return refusal
        path = inside("/", rest)
        sftp_server = self._command("sftp-server", context)
        if path is None:
            return refused(400, f"Bad folder {rest!r}.")
        if sftp_server is None:
            return refused(501, "Sharing the VM's folders needs sftp-server in the virtual"
                                " machine (Debian package openssh-sftp-server).")
        if not (yield self._holds(context, '-d "$1" && test -x', path)):
            return refused(404, f"No folder {path} the session may enter.")
        log.info("exporting the VM's {path} to the client", path=path)
        return SwitchProtocols([], ProcessBridge(self.reactor, context.program(
            [sftp_server, "-e"], path=path, name="sftp-server")))

    @inlineCallbacks
    def open(self, request: Request, rest: str):
        context, missing = self._session()
        if missing is not None:
            return missing
        ticket = share_name(request.headers.get("X-QVD-Share-Ticket") or "")
        if not request.headers.get("X-QVD-Share-Ticket") or ticket is None:
            return refused(400, "This needs X-QVD-Share-Ticket: <shared folder>.")
        path = inside(posixpath.join(shares_dir(self.settings, context.account.home), ticket),
                      rest)
        opener = self._command("open_file", context)
        if path is None:
            return refused(400, f"Bad file {rest!r}.")
        if opener is None:
            return refused(501, f"No {self.settings.commands['open_file']} in the virtual"
                                " machine to open files with.")
        if not (yield self._holds(context, "-e", path)):
            return refused(404, f"No file {path}.")
        log.info("opening {path} on the desktop", path=path)
        failed: list[Any] = []
        run_program(self.reactor, context.program([opener, path], name="open")).addErrback(
            failed.append)  # not waited for: the program it opens may run for hours
        if failed:
            return refused(500, f"Cannot run {opener}: {failed[0].getErrorMessage()}.")
        return Response(200, b"")

    def usbip(self, request: Request, rest: str) -> Any:
        refusal, _, _ = self._upgraded(request, usbip.PROTOCOL)
        if refusal is not None:
            return refusal
        problem = usbip.unavailable()
        if problem is not None:
            return refused(501, problem)
        return SwitchProtocols([], usbip.Attach())
