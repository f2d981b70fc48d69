"""Server side of the QVD HTTP dialect (reference §1.1-1.3).

One request at a time per connection: while a handler works, the transport
is paused, so pipelined bytes wait in the kernel instead of our memory.
Keep-alive is implicit; only unparsable heads (400, 431), a wrong version
(505) and a stalled head (408) close the connection.  Handler failures are
logged and answered with a canned 500, never with a traceback.

For the L7R, a request carries its connection's ``Channel``: the handler
may send any number of ``102 Processing`` heads while it works, and may end
with ``SwitchProtocols``: the server writes the ``101`` head and hands the
raw stream, starting with any bytes already read, to another protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union
from urllib.parse import unquote_plus

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from qvd.http.handover import HandoverProtocol
from qvd.stream.sockets import tune
from qvd.http.head import (
    VERSION, Head, HeadError, HeadParser, Headers, Limits, format_head, reason,
)


class Channel:
    """What a handler may do with its connection besides answering.

    ``state`` survives between the requests of one connection (the L7R keeps
    its per-connection authentication there); ``lost`` fires when the peer
    has gone, so a long handler can give up early.
    """

    __slots__ = ("_protocol", "state", "lost")  # one per connection, spliced ones too

    def __init__(self, protocol: "QVDHTTPServerProtocol"):
        self._protocol = protocol
        self.state: dict[str, object] = {}
        self.lost: Deferred = Deferred()

    @property
    def peer(self) -> str:
        address = self._protocol.transport.getPeer()
        return getattr(address, "host", str(address))

    @property
    def connected(self) -> bool:
        return not self.lost.called

    def close(self) -> None:
        """Close cleanly (a TLS ``close_notify``), within ``Timeouts.close``."""
        self._protocol.hang_up()

    def abort(self) -> None:
        """Drop the connection at once (no ``close_notify``: the peer sees it lost)."""
        self._protocol.transport.abortConnection()

    def processing(self, headers: list[tuple[str, str]]) -> None:
        """Send one ``102 Processing`` head (ignored once the peer is gone)."""
        if self.connected:
            self._protocol.writeHead(102, headers)


@dataclass
class Request:
    """A parsed request; ``query`` holds the ordered ``k=v`` pairs, ``%XX`` and
    ``+`` decoded, None for a bare ``k`` (a query that is not UTF-8 is a 400)."""

    method: str
    target: str
    headers: Headers
    channel: Optional[Channel] = None
    query: list[tuple[str, Optional[str]]] = field(init=False)

    def __post_init__(self) -> None:
        self.query = []
        for item in self.target.partition("?")[2].split("&"):
            if item:
                key, sep, value = item.partition("=")
                self.query.append((_unescape(key), _unescape(value) if sep else None))

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def _unescape(text: str) -> str:
    try:
        return unquote_plus(text, errors="strict")
    except UnicodeDecodeError:
        raise HeadError(400, "query is not UTF-8") from None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def canned(cls, status: int) -> "Response":
        """The body the original uses when no message was given."""
        return cls(status, f"{status} {reason(status)}\n".encode("ascii"))


@dataclass
class SwitchProtocols:
    """Answer ``101 Switching Protocols`` and give the raw stream to ``protocol``."""

    headers: list[tuple[str, str]]
    protocol: interfaces.IProtocol


class IRequestHandler(Interface):
    def handle(request: Request) -> Union[Response, SwitchProtocols, Deferred]:
        """Answer one request (a ``Response``, a ``SwitchProtocols``, or a Deferred
        firing with one of them)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds a peer may stall: reading a head, idle between requests, (when
    set) from connecting to its first complete head, a TLS handshake included,
    so that silent connections cannot pile up, and finishing a close we started
    (reading what we still send, answering a TLS ``close_notify``) before the
    connection is aborted."""

    head: float = 30.0
    idle: float = 300.0
    first: Optional[float] = None
    close: float = 5.0


class QVDHTTPServerProtocol(HandoverProtocol):
    log = Logger()

    def __init__(
        self,
        handler: IRequestHandler,
        clock: interfaces.IReactorTime,
        limits: Limits = Limits(),
        timeouts: Timeouts = Timeouts(),
    ):
        self.handler = handler
        self.clock = clock
        self.timeouts = timeouts
        self._parser = HeadParser(limits)
        self._busy = False
        self._closing = False
        self._timer: Optional[interfaces.IDelayedCall] = None
        self._head_timer_running = False
        self._abort_timer: Optional[interfaces.IDelayedCall] = None
        self.channel = Channel(self)

    def connectionMade(self) -> None:
        tune(self.transport)  # a small answer must not wait for Nagle and a delayed ACK
        self._arm(self.timeouts.first or self.timeouts.idle, self._idle_expired)

    def connectionLost(self, reason: Failure = None) -> None:
        self._closing = True
        self._disarm()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        if self._raw is not None:
            self._raw.connectionLost(reason)
        if not self.channel.lost.called:
            self.channel.lost.callback(None)

    # -- timers ----------------------------------------------------------
    def _arm(self, seconds: float, expired) -> None:
        self._disarm()
        self._timer = self.clock.callLater(seconds, expired)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._head_timer_running = False

    def _idle_expired(self) -> None:
        self._timer = None
        self.hang_up()

    def hang_up(self) -> None:
        """Close once our last bytes are out; a peer that does not take them (or
        does not answer a TLS close) within ``timeouts.close`` is aborted, so that
        it cannot hold the connection open for as long as it likes."""
        if self.channel.lost.called:
            return
        if self._abort_timer is None:
            self._abort_timer = self.clock.callLater(self.timeouts.close,
                                                     self.transport.abortConnection)
        self.transport.loseConnection()

    def _head_expired(self) -> None:
        self._timer = None
        self._fail(HeadError(408, "head not received in time"))

    # -- input -----------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw.dataReceived(data)
            return
        if self._closing:
            return
        self._parser.buffer += data
        self._process()

    def _process(self) -> None:
        while not self._busy and not self._closing:
            try:
                head = self._parser.feed(b"")
            except HeadError as e:
                self._fail(e)
                return
            if head is None:
                if self._parser.started and not self._head_timer_running:
                    self._arm(self.timeouts.head, self._head_expired)
                    self._head_timer_running = True
                return
            self._disarm()
            self._dispatch(head)

    def _dispatch(self, head: Head) -> None:
        try:
            request = self._request(head)
        except HeadError as e:
            self._fail(e)
            return
        self._busy = True
        self.transport.pauseProducing()
        d = maybeDeferred(self.handler.handle, request)
        d.addErrback(self._handler_failed, request)
        d.addCallback(self._respond)

    def _request(self, head: Head) -> Request:
        parts = head.start_line.split()
        if len(parts) not in (2, 3):
            raise HeadError(400, "malformed request line")
        if len(parts) == 2 or parts[2] != VERSION:
            raise HeadError(505, "only HTTP/1.1 is spoken")
        return Request(parts[0], parts[1], head.headers, self.channel)

    def _handler_failed(self, failure: Failure, request: Request) -> Response:
        self.log.failure(
            "handler failed for {method} {path}", failure, method=request.method, path=request.path
        )
        return Response.canned(500)

    # -- output ----------------------------------------------------------
    def writeHead(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.transport.write(format_head(f"{VERSION} {status} {reason(status)}", headers))

    def _write(self, response: Response) -> None:
        headers = response.headers + [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
        ]
        self.writeHead(response.status, headers)
        self.transport.write(response.body)

    def _respond(self, response: Union[Response, SwitchProtocols]) -> None:
        self._busy = False
        if self._closing:
            if isinstance(response, SwitchProtocols):  # its owner must hear it is gone
                response.protocol.connectionLost(Failure(ConnectionDone("client went away")))
            return
        if isinstance(response, SwitchProtocols):
            self._switch(response)
            return
        self._write(response)
        self.transport.resumeProducing()
        self._arm(self.timeouts.idle, self._idle_expired)
        self._process()

    def _switch(self, switch: SwitchProtocols) -> None:
        """Write the 101 head; from now on every byte belongs to ``switch.protocol``, and
        what only requests need (the parser, the connection's state such as its
        authentication cache) is let go: a spliced session may last for days."""
        self.writeHead(101, switch.headers)
        self.hand_over(self._parser, switch.protocol)
        self.channel.state.clear()
        self.transport.resumeProducing()

    def _fail(self, error: HeadError) -> None:
        """Answer a refused head and close: what follows cannot be trusted."""
        self.log.info("closing connection: {error} ({status})", error=error, status=error.status)
        self._closing = True
        self._disarm()
        self._write(Response.canned(error.status))
        self.hang_up()


@dataclass(repr=False)
class QVDHTTPServerFactory(Factory):
    """Every connection gets a protocol for ``handler`` with these bounds."""

    handler: IRequestHandler
    clock: interfaces.IReactorTime
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()

    def buildProtocol(self, addr) -> QVDHTTPServerProtocol:
        protocol = QVDHTTPServerProtocol(self.handler, self.clock, self.limits, self.timeouts)
        protocol.factory = self
        return protocol
