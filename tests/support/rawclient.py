"""A client socket that parses the QVD HTTP dialect itself, as strictly as clients read it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Generator, Optional

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

WAIT = 10.0  # seconds any single expected event may take before a test fails
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5]\d\d) ([A-Za-z][A-Za-z -]*)")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.0-9A-Za-z_^`|~]+): (.*)")
FORBIDDEN_HEADERS = {"date", "server", "connection", "transfer-encoding"}


class Malformed(AssertionError):
    """The server sent something that is not a well-formed QVD HTTP response."""


@dataclass
class Reply:
    """One response: its final head, the 1xx heads before it, the body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)


def parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """A response head without its final CRLF CRLF, checked as strictly as clients read it."""
    lines = raw.split(b"\r\n")
    match = STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise Malformed(f"bad status line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        header = HEADER_LINE.fullmatch(line)
        if header is None or b"\n" in line or b"\r" in line:
            raise Malformed(f"bad header line {line!r}")
        headers.append((header.group(1).decode("ascii"), header.group(2).decode("ascii")))
    names = [name.lower() for name, _ in headers]
    if FORBIDDEN_HEADERS & set(names):
        raise Malformed(f"header the dialect never sends in {headers}")
    status = int(match.group(1))
    if status < 200:
        if "content-length" in names or "content-type" in names:
            raise Malformed(f"a {status} with a body: {headers}")
    elif names[-2:] != ["content-type", "content-length"] or not headers[-1][1].isdigit():
        raise Malformed(f"a {status} must end with Content-Type and Content-Length: {headers}")
    return status, match.group(2).decode("ascii"), headers


def split_response(data: bytes) -> Optional[tuple[Reply, bytes]]:
    """The first complete response (1xx heads included) in ``data`` and what follows it;
    None while incomplete.  After a 101 what follows is the raw stream."""
    interim = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        status, reason, headers = parse_head(data[:end])
        data = data[end + 4:]
        if status == 102:
            interim.append((status, headers))
            continue
        if status == 101:
            return Reply(status, reason, headers, b"", interim), data
        if status < 200:
            raise Malformed(f"unexpected interim status {status}")
        length = int(headers[-1][1])
        if len(data) < length:
            return None
        return Reply(status, reason, headers, data[:length], interim), data[length:]


def parse_responses(data: bytes) -> tuple[list[Reply], bytes]:
    """Every complete response in ``data`` and the incomplete rest."""
    replies = []
    while True:
        found = split_response(data)
        if found is None:
            return replies, data
        reply, data = found
        replies.append(reply)
        if reply.status == 101:
            return replies, data


class RawClient(Protocol):
    """A client socket whose bytes the test reads itself: ``read`` a number of
    bytes, a whole ``response``, or wait until the server ``closed`` it."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._waiting: Optional[tuple[Any, defer.Deferred[Any]]] = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed.callback(None)
        self._check()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> defer.Deferred[None]:
        self.transport.loseConnection()
        return self.closed

    def _check(self) -> None:
        if self._waiting is None:
            return
        ready, d = self._waiting
        try:
            value = ready()
        except Exception:
            self._waiting = None
            d.errback()
            return
        if value is not None:
            self._waiting = None
            d.callback(value)
        elif self.closed.called:
            self._waiting = None
            d.errback(Malformed(f"connection closed; unread bytes {self.buffer!r}"))

    def _wait(self, ready: Any, timeout: float) -> defer.Deferred[Any]:
        assert self._waiting is None, "one read at a time"

        def cancelled(_: defer.Deferred[Any]) -> None:
            self._waiting = None

        d: defer.Deferred[Any] = defer.Deferred(cancelled)
        self._waiting = (ready, d)
        self._check()
        return d.addTimeout(timeout, reactor)

    def read(self, size: int, timeout: float = WAIT) -> defer.Deferred[bytes]:
        """Exactly ``size`` bytes (fails if the server closes first)."""

        def ready() -> Optional[bytes]:
            if len(self.buffer) < size:
                return None
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            return data

        return self._wait(ready, timeout)

    def response(self, timeout: float = WAIT) -> defer.Deferred[Reply]:
        """The next response with any 102s before it."""

        def ready() -> Optional[Reply]:
            found = split_response(self.buffer)
            if found is None:
                return None
            reply, self.buffer = found
            return reply

        return self._wait(ready, timeout)

    def wait_closed(self, timeout: float = WAIT) -> defer.Deferred[None]:
        """Fires once the server has closed the connection (fails after ``timeout``)."""
        d: defer.Deferred[None] = defer.Deferred()

        def fire(result: Any) -> Any:
            if not d.called:
                d.callback(None)
            return result

        self.closed.addBoth(fire)
        return d.addTimeout(timeout, reactor)


def connect(port: int) -> defer.Deferred[RawClient]:
    """A RawClient connected to 127.0.0.1:``port``."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=int(WAIT))
    return connectProtocol(endpoint, RawClient()).addTimeout(WAIT, reactor)


@defer.inlineCallbacks
def get(port: int, target: str) -> Generator[Any, Any, Reply]:
    """One request on a new connection, closed afterwards; its response."""
    client = yield connect(port)
    client.send(f"GET {target} HTTP/1.1\r\n\r\n".encode("ascii"))
    try:
        return (yield client.response())
    finally:
        yield client.close()
