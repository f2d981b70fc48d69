"""SimpleRPC client and server over real loopback sockets, and the client's timeout."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from qvd.http import client
from qvd.http.server import QVDHTTPServerFactory, Timeouts
from qvd.http.simplerpc import RPCError, SimpleRPCClient, SimpleRPCHandler, build_query


class Collect(Protocol):
    """Raw peer: sends bytes, keeps what comes back."""

    def __init__(self, data: bytes):
        self.data = data
        self.received = b""
        self.closed = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.closed.callback(self.received)


class LoopbackTests(unittest.TestCase):
    def setUp(self):
        self.calls = []

        def echo(params):
            self.calls.append(params)
            return {"params": params}

        def broken(params):
            raise RPCError("it broke\n")

        handler = SimpleRPCHandler({"echo": echo, "broken": broken, "one": lambda p: 1})
        factory = QVDHTTPServerFactory(handler, reactor, timeouts=Timeouts(head=2, idle=2))
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.rpc = SimpleRPCClient(reactor, "127.0.0.1", self.port.getHost().port, timeout=5)

    @inlineCallbacks
    def test_round_trip_with_escaping(self):
        params = [("qvd.client.keyboard", "pc105/es"), ("a b&c=d", "é ü+%"), ("flag", None)]
        result = yield self.rpc.call("echo", params)
        self.assertEqual(result, {"params": [list(p) for p in params]})

    @inlineCallbacks
    def test_scalar_result(self):
        self.assertEqual((yield self.rpc.call("one")), 1)

    @inlineCallbacks
    def test_rpc_error(self):
        error = yield self.assertFailure(self.rpc.call("broken"), RPCError)
        self.assertEqual(str(error), "it broke\n")

    @inlineCallbacks
    def test_unknown_method(self):
        error = yield self.assertFailure(self.rpc.call("nope"), RPCError)
        self.assertEqual(str(error), "HTTP request failed: 404 - 404 Not Found\n")

    @inlineCallbacks
    def test_oversize_head_gets_431_then_close(self):
        peer = Collect(b"GET /vma/one HTTP/1.1\r\nX: " + b"v" * 70000 + b"\r\n\r\n")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port), peer)
        received = yield peer.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"))


class ClientUnitTests(unittest.TestCase):
    def connect(self, timeout=3.0):
        self.reactor = MemoryReactorClock()
        d = client.get(self.reactor, "10.0.0.5", 3030, "/vma/x_state", timeout)
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        self.assertEqual((host, port), ("10.0.0.5", 3030))
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return d

    def test_request_bytes(self):
        self.connect()
        self.assertEqual(
            self.transport.value(),
            b"GET /vma/x_state HTTP/1.1\r\nUser-Agent: " + client.USER_AGENT.encode() + b"\r\n\r\n",
        )

    def test_response_in_pieces_with_bare_lf(self):
        d = self.connect()
        for piece in (b"\r\nHTTP/1.1 200 OK\n", b"Content-Length: 5\n\nab", b"cde", b"extra"):
            self.protocol.dataReceived(piece)
        response = self.successResultOf(d)
        self.assertEqual((response.status, response.body), (200, b"abcde"))
        self.assertTrue(self.transport.disconnecting)

    def test_timeout_aborts(self):
        d = self.connect(timeout=3.0)
        self.reactor.advance(2.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.failureResultOf(d, TimeoutError)
        self.assertTrue(self.transport.disconnected)

    def test_garbage_response(self):
        d = self.connect()
        self.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.failureResultOf(d, client.ResponseError)

    def test_closed_early(self):
        d = self.connect()
        self.protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        self.protocol.connectionLost(None)
        self.failureResultOf(d, client.ResponseError)


class QueryTests(unittest.TestCase):
    def test_rfc3986_escaping(self):
        self.assertEqual(
            build_query([("a.b-c_d~", "x y/z"), ("k", None), ("é", "")]),
            "a.b-c_d~=x%20y%2Fz&k&%C3%A9=",
        )
