"""A small client for the QVD HTTP dialect (reference §1.4).

One request per connection, as the original's SimpleRPC callers do: send a
GET, read the status line and headers with the shared bounded parser, read
exactly ``Content-Length`` body bytes, close.  The whole exchange (connect
included) is bounded by one timeout, because a VM that stalls must not
stall the L7R or the HKD.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Optional

from twisted.internet import interfaces
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from qvd.http.head import HeadError, HeadParser, Headers, Limits, format_head
from qvd.http.head import VERSION

USER_AGENT = f"QVD::HTTPC/0.01 ({platform.system()})"


class ResponseError(Exception):
    """The peer's answer was not a well-formed response."""


@dataclass
class ClientResponse:
    status: int
    headers: Headers
    body: bytes


class _ResponseReader(Protocol):
    def __init__(self, request: bytes, limits: Limits):
        self._request = request
        self._parser = HeadParser(limits)
        self._status: Optional[int] = None
        self._headers = Headers()
        self._length = 0
        self.finished: Deferred = Deferred(lambda d: self.transport.abortConnection())

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        try:
            if self._status is None:
                self._read_head(data)
            else:
                self._parser.buffer += data
        except (HeadError, ResponseError) as e:
            self._finish(Failure(ResponseError(str(e))))
            return
        if self._status is not None and len(self._parser.buffer) >= self._length:
            body = self._parser.buffer[: self._length]
            self._finish(ClientResponse(self._status, self._headers, body))

    def _read_head(self, data: bytes) -> None:
        head = self._parser.feed(data)
        if head is None:
            return
        parts = head.start_line.split(None, 2)
        if len(parts) < 2 or parts[0] != VERSION or not parts[1].isdigit():
            raise ResponseError(f"bad status line {head.start_line!r}")
        length = head.headers.get("Content-Length", "0") or "0"
        if not length.isdigit():
            raise ResponseError(f"bad Content-Length {length!r}")
        self._status, self._headers, self._length = int(parts[1]), head.headers, int(length)

    def _finish(self, result: "ClientResponse | Failure") -> None:
        self.transport.loseConnection()
        if isinstance(result, Failure):
            self.finished.errback(result)
        else:
            self.finished.callback(result)

    def connectionLost(self, reason: Failure = None) -> None:
        if not self.finished.called:
            self.finished.errback(ResponseError("connection closed before a complete response"))


class _OneConnection(Factory):
    """Like ``connectProtocol``'s factory, without a log line per connection."""

    noisy = False

    def __init__(self, protocol: Protocol):
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self._protocol


def quiet_connect(endpoint: interfaces.IStreamClientEndpoint, protocol: Protocol) -> Deferred:
    """Connect ``protocol`` through ``endpoint``; fires with it once connected."""
    return endpoint.connect(_OneConnection(protocol))


def get(
    reactor: interfaces.IReactorTCP,
    host: str,
    port: int,
    target: str,
    timeout: float,
    limits: Limits = Limits(),
) -> Deferred:
    """GET ``target``; fires with a ``ClientResponse``, or fails (TimeoutError on stall)."""
    request = format_head(f"GET {target} {VERSION}", [("User-Agent", USER_AGENT)])
    reader = _ResponseReader(request, limits)
    d = quiet_connect(TCP4ClientEndpoint(reactor, host, port, timeout=timeout), reader)
    d.addCallback(lambda _: reader.finished)
    return d.addTimeout(timeout, reactor)
