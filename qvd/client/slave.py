"""This machine's side of the slave channel: what the VM may ask of it.

nxproxy runs ``NX_SLAVE_CMD`` for each slave connection opened in the VM
(to ``127.0.0.1:<11000 + display>`` there).  Unless ``client.slave.command``
names a program of one's own, ours hands the channel to this ``qvd-client``
(``qvd.slave.handoff``), which answers, in QVD's dialect:

* ``GET /ping`` -> ``Pong!`` and ``GET /version`` (no key needed, as in QVD 4);
* ``POST /open/<path>`` with ``X-QVD-Share-Ticket: <name>`` and the slave key:
  opens ``<path>`` of the shared folder known in the VM as
  ``~/Redirected/<name>`` with this machine's programs (``command.open_file``).

The hand-off socket and script live in a private directory of this run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from qvd.http.server import QVDHTTPServerFactory, Request, Response
from qvd.slave import handoff
from qvd.slave.bridge import Program, run_program
from qvd.slave.routes import Route, SlaveHandler, inside, refused, share_name

log = Logger()


def version() -> str:
    """This installation's version (the slave channel's ``/version``, ``qvd-client -v``)."""
    try:
        return metadata.version("qvd-node")
    except metadata.PackageNotFoundError:
        return "unknown"


class ClientSlaveEndpoints:
    """``tickets()``: the shared folders by their name in the VM."""

    def __init__(self, reactor: Any, open_command: str,
                 tickets: Callable[[], Mapping[str, str]]):
        self.reactor = reactor
        self.open_command = open_command
        self.tickets = tickets
        self.opened: list[defer.Deferred] = []  # each fires when its program has exited

    def routes(self) -> list[Route]:
        return [Route("GET", "/ping", self.ping, auth=False),
                Route("GET", "/version", self.version, auth=False),
                Route("POST", "/open/", self.open)]

    def ping(self, request: Request, rest: str) -> Response:
        return Response(200, b"Pong!\n")

    def version(self, request: Request, rest: str) -> Response:
        return Response(200, f"{version()}\n".encode())

    def open(self, request: Request, rest: str) -> Response:
        ticket = share_name(request.headers.get("X-QVD-Share-Ticket") or "")
        folder = self.tickets().get(ticket or "")
        if folder is None:
            return refused(404, "No such shared folder (X-QVD-Share-Ticket).")
        path = inside(folder, rest)
        if path is None or not os.path.exists(path):
            return refused(404, f"No file {rest!r} in the shared folder {ticket}.")
        log.info("The desktop opens {path} here.", path=path)
        failed: list[Any] = []
        opened = run_program(self.reactor, Program([self.open_command, path],
                                                   dict(os.environ), name="open"))
        opened.addErrback(failed.append)
        if failed:
            return refused(500, f"Cannot run {self.open_command}.")
        self.opened.append(opened)
        return Response(200, b"")


@dataclass(eq=False, repr=False)  # no repr: it would show the session key
class ClientSlaveServer:
    """Serves the VM's slave channels for one session (``start`` to ``stop``)."""

    reactor: Any
    endpoints: ClientSlaveEndpoints
    key: Optional[str] = field(default=None, init=False)  # the session's, once started
    _directory: Optional[str] = field(default=None, init=False)
    _listener: Optional[handoff.HandOffListener] = field(default=None, init=False)

    def start(self, key: str) -> str:
        """Listen; the ``NX_SLAVE_CMD`` for nxproxy."""
        self.key = key
        self._directory = tempfile.mkdtemp(prefix="qvd-client-slave-")
        socket_path = os.path.join(self._directory, "slave.sock")
        command = os.path.join(self._directory, "slave-handoff")
        handoff.write_script(command, socket_path, "qvd-client")
        handler = SlaveHandler(self.endpoints.routes(), lambda: self.key)
        self._listener = handoff.HandOffListener(self.reactor,
                                                 QVDHTTPServerFactory(handler, self.reactor))
        self._listener.listen(socket_path)
        return command

    def stop(self) -> defer.Deferred:
        """Stop listening, then remove the private directory (its socket goes first)."""
        listener, self._listener = self._listener, None
        directory, self._directory = self._directory, None
        d = defer.maybeDeferred(listener.stop) if listener is not None else defer.succeed(None)
        if directory is not None:
            d.addBoth(lambda _: shutil.rmtree(directory, ignore_errors=True))
        return d
