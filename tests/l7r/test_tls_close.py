"""How a spliced session's TLS stream ends, seen by a real TLS client (the stdlib's, which
tells a ``close_notify`` from a TCP end without one): when the VM side closes, half-closes
or the session is taken over, the client reads every byte and then a clean TLS close;
never a TCP FIN under a live TLS stream.

The VM side is scripted so that the test decides when it writes and how it ends: a FAKE
VMA (SimpleRPC ``x_start`` -> ``starting``, ``x_state`` -> ``listening``) and a FAKE NX
port (the test's own TCP peer), since nxagent cannot be told to half-close on cue."""

from __future__ import annotations

import ssl
from typing import Any, Generator

from twisted.internet import defer, protocol, reactor, threads
from twisted.trial import unittest

from qvd.http.server import QVDHTTPServerFactory
from qvd.http.simplerpc import SimpleRPCHandler
from tests.l7r.test_splice import Peer
from tests.support.cclient import connect_to_vm, read_to_end
from tests.support.l7r import start_tls_fixture
from tests.support.waiting import poll

ALICE = "alice:s3cret"


class NXPort(protocol.Factory):
    """Hands each session's peer to whoever waits for the next one."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[Peer]] = []
        self.peers: list[Peer] = []

    def buildProtocol(self, addr: Any) -> Peer:
        peer = Peer(close_on_eof=True)
        self.peers.append(peer)
        if self.waiting:
            self.waiting.pop(0).callback(peer)
        return peer

    def next_peer(self) -> defer.Deferred[Peer]:
        d: defer.Deferred[Peer] = defer.Deferred()
        self.waiting.append(d)
        return d


def received(stream: ssl.SSLSocket) -> tuple[bytes, str]:
    """Everything the L7R sends, and how the stream ended (``read_to_end``)."""
    try:
        records, ending = read_to_end(stream)
    finally:
        stream.close()
    return b"".join(records), ending


class TLSCloseTests(unittest.TestCase):
    conf = "internal.l7r.poll_time.vm = 0.2\n"
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.node, self.cert = yield start_tls_fixture(self, self.conf)
        vma = SimpleRPCHandler({"x_start": lambda params: "starting",
                                "x_state": lambda params: "listening"})
        vma_port = reactor.listenTCP(0, QVDHTTPServerFactory(vma, reactor), interface="127.0.0.1")
        self.addCleanup(vma_port.stopListening)
        self.nx = NXPort()
        nx_port = reactor.listenTCP(0, self.nx, interface="127.0.0.1")
        self.addCleanup(nx_port.stopListening)
        self.node.sql(
            "UPDATE vm_runtimes SET vm_state = 'running', host_id = %s, vm_address = '127.0.0.1',"
            " vm_vma_port = %s, vm_x_port = %s WHERE vm_id = 10000",
            (self.node.host_id, vma_port.getHost().port, nx_port.getHost().port))

    def tearDown(self) -> None:
        for peer in self.nx.peers:
            if peer.transport is not None:
                peer.transport.abortConnection()

    @defer.inlineCallbacks
    def session(self) -> Generator[Any, Any, tuple[ssl.SSLSocket, Peer]]:
        """A client's upgraded TLS stream and the NX peer it is spliced to."""
        peer = self.nx.next_peer()
        answer = yield threads.deferToThread(connect_to_vm, self.node.port, self.cert, 10000,
                                             ALICE, keep=True)
        self.assertEqual(answer.outcome, "upgraded", answer)
        return answer.stream, (yield peer)

    @defer.inlineCallbacks
    def test_the_vm_closing_is_a_tls_close_for_the_client(self) -> Generator[Any, Any, None]:
        stream, peer = yield self.session()
        ending = threads.deferToThread(received, stream)
        peer.transport.write(b"bye " * 50000)
        peer.transport.loseConnection()
        self.assertEqual((yield ending), (b"bye " * 50000, "close_notify"))

    @defer.inlineCallbacks
    def test_a_vm_half_close_never_cuts_the_tls_stream(self) -> Generator[Any, Any, None]:
        """The VM stops sending: the client gets all of it, then a TLS close (never a TCP
        FIN under its TLS stream); the VM's socket is closed after it."""
        stream, peer = yield self.session()
        ending = threads.deferToThread(received, stream)
        peer.transport.write(b"last words " * 20000)
        peer.transport.loseWriteConnection()
        self.assertEqual((yield ending), (b"last words " * 20000, "close_notify"))
        yield peer.closed

    @defer.inlineCallbacks
    def test_a_client_taken_over_gets_a_tls_close(self) -> Generator[Any, Any, None]:
        """A second client takes the VM: the first one's stream ends with a TLS close
        (which qvd-client tells from a lost connection), the second gets the VM."""
        first, first_peer = yield self.session()
        ending = threads.deferToThread(received, first)
        second, _ = yield self.session()
        self.addCleanup(second.close)
        self.assertEqual((yield ending), (b"", "close_notify"))
        yield first_peer.closed

    @defer.inlineCallbacks
    def test_bytes_both_ways_then_the_client_closes(self) -> Generator[Any, Any, None]:
        stream, peer = yield self.session()
        yield threads.deferToThread(stream.sendall, b"hello vm")
        yield poll(lambda: defer.succeed(peer.received), lambda got: got == b"hello vm", 20,
                   "the VM reading the client's bytes")
        peer.transport.write(b"hello client")
        self.assertEqual((yield threads.deferToThread(stream.recv, 100)), b"hello client")
        yield threads.deferToThread(stream.close)
        yield peer.eof
