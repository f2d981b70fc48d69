"""Getting slave channels out of nxagent/nxproxy and into our reactor.

When the far end opens a slave channel, nxcomp runs ``NX_SLAVE_CMD`` (no
arguments, the channel as standard input and output, every other descriptor
closed).  Our command is a few lines of stdlib Python that pass its standard
input over a UNIX socket (``SCM_RIGHTS``) to the process that serves the
channel (the VMA, or ``qvd-client``), then exit.  So the server needs nothing
of ours to be readable by the session account (a checkout under ``/root``
is not), it keeps the slave key in memory, and it serves every channel in
one reactor, starting the programs a request needs (sshfs, sftp-server) as
the account that owns the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from typing import Any, Optional

from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from qvd.files import replace, unlink

log = Logger()

SCRIPT = """\
#!{python}
# Written by {writer}: NX_SLAVE_CMD, hands the slave channel (stdin) to it.
import socket
import sys

try:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect({path!r})
        socket.send_fds(s, [b"\\0"], [0])
except OSError as e:
    sys.exit("qvd slave channel hand-off to {path}: %s" % e)
"""


def system_python() -> str:
    """An interpreter any account may run (a virtualenv's may sit in a private directory)."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def write_script(path: str, socket_path: str, writer: str,
                 python: Optional[str] = None) -> None:
    """The hand-off command, readable and runnable by everyone (it holds no secret)."""
    replace(path, SCRIPT.format(python=python or system_python(), writer=writer,
                                path=socket_path), 0o755)


HANDOFF_TIMEOUT = 10.0


@implementer(interfaces.IFileDescriptorReceiver)
class _HandOff(Protocol):
    """One hand-off connection: every descriptor it brings becomes a served channel.
    The script sends at once and leaves; a connection that lingers is closed."""

    _timer: Optional[interfaces.IDelayedCall] = None

    def connectionMade(self) -> None:
        self._timer = self.factory.reactor.callLater(HANDOFF_TIMEOUT,
                                                     self.transport.loseConnection)

    def fileDescriptorReceived(self, descriptor: int) -> None:
        self.factory.adopt(descriptor)

    def dataReceived(self, data: bytes) -> None:
        """The byte that carried the descriptor."""

    def connectionLost(self, reason: Any = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()


class HandOffListener(Factory):
    """Listens on a UNIX socket; adopts each channel it is handed into ``serve``."""

    protocol = _HandOff
    noisy = False

    def __init__(self, reactor: Any, serve: Factory):
        self.reactor = reactor
        self.serve = serve
        self.port: Optional[interfaces.IListeningPort] = None

    def listen(self, path: str) -> interfaces.IListeningPort:
        """Bind ``path`` (a stale socket file is replaced), mode 0600."""
        unlink(path)
        self.port = self.reactor.listenUNIX(path, self, mode=0o600, wantPID=False)
        return self.port

    def adopt(self, descriptor: int) -> None:
        try:
            probe = socket.socket(fileno=descriptor)  # learns the family and type
            kind = (probe.family, probe.type)
            probe.detach()
            if kind != (socket.AF_UNIX, socket.SOCK_STREAM):
                raise ValueError(f"not a stream socket: {kind}")
            os.set_blocking(descriptor, False)
            self.reactor.adoptStreamConnection(descriptor, socket.AF_UNIX, self.serve)
        except (OSError, ValueError) as e:
            log.warn("refused a slave channel hand-off: {error}", error=e)
        finally:
            os.close(descriptor)

    def stop(self) -> Any:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
