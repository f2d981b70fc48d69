"""Hypothesis against the QVD HTTP dialect and the L7R: random bytes and mutated
request heads never crash it, never leak a traceback, always get well-formed
answers, never make it buffer more than its limits, and every 400/408/431/505
closes the connection.

Two levels: ``QVDHTTPServerProtocol`` on a ``StringTransport`` and a ``Clock``
with ``StubHandler`` (a stub: the parser is what is fuzzed there, no database
needed); and fewer examples over real sockets to the in-process L7R with its
real handler, authentication chain and QVD-DB.
"""

from __future__ import annotations

import base64
import socket
from typing import Any, Generator
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, threads
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from qvd.http.head import Limits
from qvd.http.server import IRequestHandler, QVDHTTPServerProtocol, Request, Response, Timeouts
from tests.support.l7r import make_node, start_l7r
from tests.support.rawclient import Reply, WAIT, parse_responses

CLOSING = {400, 408, 431, 505}
LEAKS = (b"Traceback", b"Exception", b'File "', b"Error:")
ALIVE = b"I am alive!\r\n"
PING = b"GET /qvd/ping HTTP/1.1\r\n\r\n"


@implementer(IRequestHandler)
class StubHandler:
    """A stub of the L7R's handler for parser fuzzing: ping answers, the rest is 404."""

    def handle(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/qvd/ping":
            return Response(200, ALIVE)
        return Response.canned(404)


# -- strategies --------------------------------------------------------------------------------
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PATHS = [b"/qvd/ping", b"/qvd/list_of_vm", b"/qvd/list_of_applications",
         b"/qvd/authenticate_user", b"/qvd/create_auth_token", b"/qvd/stop_vm",
         b"/qvd/connect_to_vm", b"/", b"/qvd/", b"*"]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def tokens(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.text(alphabet=TOKEN.decode(), min_size=min_size, max_size=max_size).map(str.encode)


def sized(low: int, high: int, fill: bytes = b"x") -> st.SearchStrategy[bytes]:
    return st.integers(low, high).map(lambda n: fill * n)


def line_ends(loose: bool) -> st.SearchStrategy[bytes]:
    return st.sampled_from([b"\n", b"\r\n", b"\r", b"", b"\n\r"] if loose else [b"\n", b"\r\n"])


def rarely(draw: Any) -> bool:
    return draw(st.integers(0, 5)) == 0


@st.composite
def credentials(draw: Any) -> bytes:
    """An ``Authorization`` value: mostly Basic or Bearer with odd logins and passwords."""
    login = draw(st.one_of(st.sampled_from(["alice", "ALICE@Default", " alice#default ", "a\0b",
                                            "alice@", "@", "alice@nosuch", "alice@*", "é", "",
                                            "alice@t\0"]),
                           st.text(max_size=12)))
    password = draw(st.one_of(st.sampled_from(["s3cret", "", "\0", ":", "s3cret\0"]),
                              st.text(max_size=12)))
    userpass = f"{login}:{password}".encode() if not rarely(draw) else draw(st.binary(max_size=20))
    scheme = draw(st.sampled_from([b"Basic ", b"Bearer "]) if not rarely(draw) else
                  st.sampled_from([b"basic ", b"BEARER ", b"Digest ", b"", b"Basic"]))
    if not rarely(draw):
        return scheme + b64(userpass) + draw(st.sampled_from([b"", b" \t", b"="]))
    return scheme + draw(st.one_of(st.binary(max_size=40).filter(lambda v: b"\n" not in v),
                                   sized(8100, 8200, b"A")))


def queries() -> st.SearchStrategy[bytes]:
    key = st.one_of(st.sampled_from(["id", "qvd.client.os", "custom.x", "store_auth", "file_name",
                                     "qvd.client.nxagent.extra_args"]), st.text(max_size=10))
    value = st.one_of(st.none(), st.sampled_from(["10000", "424242", "-1", "", "0", "1",
                                                  "99999999999999999999", "1e3", " 7 "]),
                      st.text(max_size=20))
    encode = st.sampled_from([lambda t: quote(t, safe=""), lambda t: quote(t, safe="/=&+%"),
                              lambda t: t])

    def render(items: list[tuple[str, Any, Any]]) -> bytes:
        parts = [enc(k) + ("" if v is None else "=" + enc(v)) for k, v, enc in items]
        return ("&".join(parts)).encode("utf-8")

    return st.lists(st.tuples(key, value, encode), max_size=6).map(render)


def header_lines(loose: bool) -> st.SearchStrategy[list[bytes]]:
    known = st.sampled_from([b"Authorization", b"authorization", b"Connection", b"Upgrade",
                             b"User-Agent", b"Content-Length", b"Host", b"Auth-6c616e67",
                             b"Auth-zz", b"Transfer-Encoding"])
    name = st.one_of(known, tokens(1, 20),
                     st.binary(max_size=20) if loose else tokens(0, 2))
    value = st.one_of(
        st.sampled_from([b"Upgrade", b"QVD/1.0", b"upgrade", b"keep-alive", b"0", b"12"]),
        credentials(),
        st.binary(max_size=60).filter(lambda v: loose or b"\n" not in v),
        sized(8150, 8200, b"v"))
    separator = st.sampled_from([b": ", b":", b" : ", b":\t"] + ([b"", b";"] if loose else []))
    line = st.tuples(name, separator, value).map(b"".join)
    continuation = st.tuples(st.sampled_from([b" ", b"\t"]), st.binary(max_size=20)).map(b"".join)
    lines = st.one_of(line, continuation) if loose else line
    # no blank line inside a head here: that would end it (tested by the loose variant)
    return st.lists(lines.filter(lambda x: loose or x.strip(b"\r")), max_size=70)


@st.composite
def request_heads(draw: Any, loose: bool = True) -> bytes:
    """A request head: mostly what a client would send, with rare odd parts (method,
    version, target, long lines, random headers), then (when ``loose``) random byte
    mutations."""

    method = b"GET" if not rarely(draw) else draw(st.one_of(
        st.sampled_from([b"POST", b"HEAD", b"get", b""]), tokens(0, 8)))
    path = draw(st.sampled_from(PATHS if rarely(draw) else PATHS[1:7]))
    target = path + (b"?" + draw(queries()) if draw(st.booleans()) else b"")
    if rarely(draw):
        target += draw(st.one_of(sized(8100, 8200, b"a"),
                                 st.binary(max_size=20).filter(lambda v: loose or b"\n" not in v)))
    version = b"HTTP/1.1" if not rarely(draw) else draw(st.sampled_from(
        [b"HTTP/1.0", b"http/1.1", b"", b"HTTP/1.1 extra", b"HTTP/2"]))
    eol = line_ends(loose)
    head = draw(st.sampled_from([b"", b"\n", b"\r\n\r\n"]))
    head += b" ".join(p for p in (method, target, version) if p) + draw(eol)
    lines = draw(header_lines(loose)) if rarely(draw) else []
    if not rarely(draw):  # what the L7R reads: most requests try to log in
        lines.append(b"Authorization: " + draw(credentials()))
    if draw(st.booleans()):
        lines += [b"Connection: " + draw(st.sampled_from([b"Upgrade", b"upgrade", b"close"])),
                  b"Upgrade: " + draw(st.sampled_from([b"QVD/1.0", b"QVD/1.1", b""]))]
    for line in draw(st.permutations(lines)):
        head += line + draw(eol)
    head += draw(eol)
    if not loose:
        return head.rstrip(b"\r\n") + b"\r\n\r\n"  # one head, whatever its line ends
    for _ in range(draw(st.integers(0, 4))):  # byte-level mutations
        position = draw(st.integers(0, len(head)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        piece = draw(st.sampled_from([b"\0", b"\r", b"\n", b"\xff", b" ", b":", b"\r\n\r\n",
                                      b"\xc3\xa9", b"%", b"%00"]))
        if kind == "insert":
            head = head[:position] + piece + head[position:]
        elif kind == "delete":
            head = head[:position] + head[position + draw(st.integers(1, 10)):]
        elif kind == "replace":
            head = head[:position] + piece + head[position + len(piece):]
        else:
            head = head[:position] + head[position:position + 40] * draw(st.integers(2, 300)) \
                + head[position + 40:]
    return head


def one_head(data: bytes) -> bool:
    """True if ``data`` is one head: no blank line before its end."""
    body = data.lstrip(b"\r\n").rstrip(b"\r\n")
    return b"\n\n" not in body and b"\n\r\n" not in body


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, position = [], 0
    for size in sizes:
        if position >= len(data):
            break
        chunks.append(data[position:position + size])
        position += size
    return chunks + ([data[position:]] if position < len(data) else [])


CHUNK_SIZES = st.lists(st.integers(1, 3000), max_size=20)


# -- checks ------------------------------------------------------------------------------------
def check_replies(testcase: unittest.TestCase, replies: list[Reply], allowed: set[int]) -> None:
    for index, reply in enumerate(replies):
        testcase.assertIn(reply.status, allowed, reply)
        for leak in LEAKS:
            testcase.assertNotIn(leak, reply.body)
        if reply.status in CLOSING:
            testcase.assertEqual(index, len(replies) - 1, "a reply after a closing one")


class ProtocolFuzzTests(unittest.TestCase):
    """The server protocol with small limits, so that inputs reach them often."""

    limits = Limits(max_line=200, max_headers=8, max_head=1000)
    timeouts = Timeouts(head=5, idle=60, first=30)

    def serve(self, data: bytes, sizes: list[int]) -> None:
        clock = Clock()
        transport = StringTransport()
        protocol = QVDHTTPServerProtocol(StubHandler(), clock, self.limits, self.timeouts)
        protocol.makeConnection(transport)
        for chunk in chunked(data, sizes):
            protocol.dataReceived(chunk)
            if not transport.disconnecting:  # the parser holds at most one bounded head
                parser = protocol._parser
                self.assertLessEqual(len(parser.buffer), self.limits.max_line)
                self.assertLessEqual(parser._size + len(parser.buffer), self.limits.max_head)
        clock.advance(self.timeouts.head)  # a head left half-sent times out
        replies, rest = parse_responses(transport.value())
        self.assertEqual(rest, b"", "an incomplete or malformed response")
        check_replies(self, replies, {200, 404} | CLOSING)
        closed = bool(replies) and replies[-1].status in CLOSING
        self.assertEqual(transport.disconnecting, closed)
        if not closed and protocol._parser.started:
            self.fail("a started head neither answered nor timed out")
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(max_examples=400, deadline=None)
    @given(st.binary(max_size=3000), CHUNK_SIZES)
    def test_random_bytes(self, data: bytes, sizes: list[int]) -> None:
        self.serve(data, sizes)

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(request_heads(), min_size=1, max_size=3).map(b"".join), CHUNK_SIZES)
    def test_mutated_heads(self, data: bytes, sizes: list[int]) -> None:
        self.serve(data, sizes)

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 3 * 1000), st.sampled_from([b"a", b"\0", b"\xff", b" ", b"\r"]),
           st.sampled_from(["target", "header", "headers", "blank"]))
    def test_sizes_around_the_limits(self, size: int, fill: bytes, where: str) -> None:
        if where == "target":
            data = b"GET /" + fill * size + b" HTTP/1.1\n\n"
        elif where == "header":
            data = b"GET / HTTP/1.1\nX: " + fill * size + b"\n\n"
        elif where == "headers":
            data = b"GET / HTTP/1.1\n" + b"X: y\n" * (size // 100) + b"\n"
        else:
            data = b"\n" * size + PING
        self.serve(data, [size + 30])


class SocketFuzzTests(unittest.TestCase):
    """Fewer examples over real sockets to the in-process L7R (real handler and DB).

    Hypothesis runs in a thread with blocking sockets while the reactor serves.
    Alice's only VM is blocked, so no request goes on to start a VM.
    """

    @defer.inlineCallbacks
    def setUp(self) -> Generator[defer.Deferred[Any], Any, None]:
        node = make_node(self, "l7r.auth.throttle.max_failures = 0\nl7r.timeout.head = 2\n")
        for line in ("qa user new login=alice,password=s3cret", "qa osf new name=desktops",
                     "qa vm new name=alice-desktop,user=alice,osf=desktops",
                     "qa vm name=alice-desktop block"):
            node.qa(line)
        self.node = yield start_l7r(self, node)

    def exchange(self, request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.node.port), timeout=WAIT) as sock:
            sock.sendall(request)
            reply = self.receive(sock, request)
            check_replies(self, [reply], {200, 400, 401, 403, 404, 422, 426, 431, 505})
            if reply.status in CLOSING:
                self.assertEqual(sock.recv(1), b"", "still open after a closing reply")
                return
            sock.sendall(PING)  # the connection is still usable, and in step
            again = self.receive(sock, PING)
            self.assertEqual((again.status, again.body), (200, ALIVE))

    def receive(self, sock: socket.socket, request: bytes) -> Reply:
        data = b""
        while True:
            replies, _ = parse_responses(data)
            if replies:
                self.assertEqual(len(replies), 1, f"several replies to {request!r}")
                return replies[0]
            chunk = sock.recv(65536)
            if not chunk:
                self.fail(f"closed without a reply to {request!r}: {data!r}")
            data += chunk

    def test_requests(self) -> defer.Deferred[None]:
        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request_heads(loose=False).filter(one_head))
        def run(request: bytes) -> None:
            self.exchange(request)

        d = threads.deferToThread(run)
        d.addCallback(lambda _: self.assertEqual(self.flushLoggedErrors(), []))
        return d

    def test_random_bytes(self) -> defer.Deferred[None]:
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.binary(max_size=500))
        def run(data: bytes) -> None:
            # a blank line ends whatever head the bytes left open, then a ping must work
            # unless the connection was closed
            with socket.create_connection(("127.0.0.1", self.node.port), timeout=WAIT) as sock:
                sock.sendall(data + b"\r\n\r\n" + PING)
                received, replies, rest = b"", [], b""
                while not replies or replies[-1].body != ALIVE:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                    replies, rest = parse_responses(received)
                self.assertEqual(rest, b"", "an incomplete or malformed response")
                self.assertNotEqual(replies, [], "closed without a reply")
                check_replies(self, replies, {200, 400, 404, 431, 505})
                if replies[-1].body != ALIVE:
                    self.assertIn(replies[-1].status, CLOSING, "closed without a reason")

        d = threads.deferToThread(run)
        d.addCallback(lambda _: self.assertEqual(self.flushLoggedErrors(), []))
        return d
