"""The QVD HTTP dialect's server protocol, driven byte by byte (StringTransport, Clock)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface import implementer

from qvd.http.head import Limits
from qvd.http.server import (
    IRequestHandler,
    QVDHTTPServerProtocol,
    Request,
    Response,
    Timeouts,
)


@implementer(IRequestHandler)
class Recorder:
    """Answers each request with its method, path and query, or as told."""

    def __init__(self):
        self.requests: list[Request] = []
        self.answer = None

    def handle(self, request: Request):
        self.requests.append(request)
        if self.answer is not None:
            return self.answer(request)
        return Response(200, f"{request.method} {request.path} {request.query}".encode())


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


class ServerTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.handler = Recorder()
        self.limits = Limits(max_line=100, max_headers=5, max_head=300)
        self.protocol = QVDHTTPServerProtocol(
            self.handler, self.clock, self.limits, Timeouts(head=5, idle=60)
        )
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.transport.clear()
        self.protocol.dataReceived(data)
        return self.transport.value()

    def assertClosedWith(self, output: bytes, status_line: bytes):
        self.assertTrue(output.startswith(status_line + b"\r\n"), output)
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(b"Traceback", output)

    def test_bare_lf_without_host(self):
        out = self.send(b"GET /vma/ping?a=1&b=x%2Fy+z&c HTTP/1.1\n\n")
        self.assertEqual(out, ok(b"GET /vma/ping [('a', '1'), ('b', 'x/y z'), ('c', None)]"))
        self.assertFalse(self.transport.disconnecting)

    def test_crlf_and_headers(self):
        out = self.send(b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nX-A:  v  \r\n \tmore\r\n\r\n")
        self.assertEqual(out, ok(b"GET /x []"))
        headers = self.handler.requests[0].headers
        self.assertEqual(headers.get("user-agent"), "t")
        self.assertEqual(headers.get("X-A"), "v more")

    def test_leading_blank_lines_are_skipped(self):
        self.assertEqual(self.send(b"\r\n\n\nGET /x HTTP/1.1\n\n"), ok(b"GET /x []"))

    def test_keep_alive_pipelined_in_order(self):
        out = self.send(b"GET /a HTTP/1.1\n\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\n\n")
        self.assertEqual(out, ok(b"GET /a []") + ok(b"GET /b []") + ok(b"GET /c []"))
        self.assertFalse(self.transport.disconnecting)

    def test_request_split_across_reads(self):
        for chunk in (b"GE", b"T /a HT", b"TP/1.1\r", b"\n", b"\r"):
            self.assertEqual(self.send(chunk), b"")
        self.assertEqual(self.send(b"\n"), ok(b"GET /a []"))

    def test_one_request_at_a_time(self):
        pending = Deferred()
        self.handler.answer = lambda request: pending
        self.assertEqual(self.send(b"GET /a HTTP/1.1\n\nGET /b HTTP/1.1\n\n"), b"")
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(self.handler.requests), 1)
        self.handler.answer = None
        pending.callback(Response(200, b"first"))
        self.assertEqual(self.transport.value(), ok(b"first") + ok(b"GET /b []"))
        self.assertEqual(self.transport.producerState, "producing")

    def test_wrong_or_missing_version(self):
        for line in (b"GET /a HTTP/1.0\n\n", b"GET /a\n\n", b"GET /a http/1.1\n\n"):
            self.setUp()
            self.assertClosedWith(self.send(line), b"HTTP/1.1 505 HTTP Version Not Supported")

    def test_malformed(self):
        for data in (
            b"GET\n\n",
            b"GET /a b HTTP/1.1\n\n",
            b"GET /a HTTP/1.1\nno colon here\n\n",
            b"GET /a HTTP/1.1\nbad name: x\n\n",
            b"GET /a HTTP/1.1\n continuation first\n\n",
            b"GET /\xff HTTP/1.1\n\n",
            b"GET /a?x=%ff HTTP/1.1\n\n",
        ):
            self.setUp()
            self.assertClosedWith(self.send(data), b"HTTP/1.1 400 Bad Request")
            self.assertEqual(self.handler.requests, [])

    def test_nothing_is_read_after_close(self):
        self.send(b"GET /a HTTP/1.0\n\n")
        self.assertEqual(self.send(b"GET /b HTTP/1.1\n\n"), b"")
        self.assertEqual(self.handler.requests, [])

    def test_request_line_too_long(self):
        out = self.send(b"GET /" + b"a" * 200)
        self.assertClosedWith(out, b"HTTP/1.1 400 Bad Request")

    def test_header_line_too_long(self):
        out = self.send(b"GET /a HTTP/1.1\nX: " + b"v" * 200 + b"\n\n")
        self.assertClosedWith(out, b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_too_many_headers(self):
        out = self.send(b"GET /a HTTP/1.1\n" + b"X: 1\n" * 6 + b"\n")
        self.assertClosedWith(out, b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_head_too_large(self):
        out = self.send(b"GET /a HTTP/1.1\n" + (b"X: " + b"v" * 90 + b"\n") * 4)
        self.assertClosedWith(out, b"HTTP/1.1 431 Request Header Fields Too Large")

    def test_head_timeout(self):
        self.send(b"GET /a HTTP/1.1\n")
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.protocol.dataReceived(b"X: 1\n")  # trickling does not extend the deadline
        self.clock.advance(0.2)
        self.assertClosedWith(self.transport.value(), b"HTTP/1.1 408 Request Timeout")

    def test_idle_timeout(self):
        self.clock.advance(59)
        self.send(b"\n\n")  # blank lines are not a request
        self.assertEqual(self.send(b"GET /a HTTP/1.1\n\n"), ok(b"GET /a []"))
        self.clock.advance(59.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), ok(b"GET /a []"))

    def test_no_timer_while_handling(self):
        pending = Deferred()
        self.handler.answer = lambda request: pending
        self.send(b"GET /a HTTP/1.1\n\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        pending.callback(Response(204))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_handler_failure_is_500_without_traceback(self):
        def boom(request):
            raise ValueError("secret internals")

        self.handler.answer = boom
        out = self.send(b"GET /a HTTP/1.1\n\n")
        self.assertEqual(
            out,
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 26\r\n\r\n500 Internal Server Error\n",
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_connection_lost_while_handling(self):
        pending = Deferred()
        self.handler.answer = lambda request: pending
        self.send(b"GET /a HTTP/1.1\n\n")
        self.protocol.connectionLost(None)
        pending.callback(Response(200, b"late"))
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.clock.getDelayedCalls(), [])
