"""The NX splice over real loopback sockets: bytes, backpressure, half-close."""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial import unittest
from zope.interface import implementer

from qvd.stream.splice import SpliceEnd


@implementer(IHalfCloseableProtocol)
class Peer(protocol.Protocol):
    """A real socket's far end: collects what it reads, notes EOF and close."""

    def __init__(self, close_on_eof: bool = False) -> None:
        self.close_on_eof = close_on_eof
        self.received = bytearray()
        self.eof = defer.Deferred()
        self.closed = defer.Deferred()
        self.wanted: tuple[int, defer.Deferred] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.wanted and len(self.received) >= self.wanted[0]:
            _, d = self.wanted
            self.wanted = None
            d.callback(bytes(self.received))

    def until(self, size: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.wanted = (size, d)
        self.dataReceived(b"")
        return d

    def readConnectionLost(self) -> None:
        self.eof.callback(None)
        if self.close_on_eof:  # as nxproxy and nxagent do
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if not self.eof.called:
            self.eof.callback(None)
        self.closed.callback(None)


class SpliceTests(unittest.TestCase):
    """client <-> [client end | L7R | vm end] <-> vm, all on 127.0.0.1."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.vm_peer = Peer()
        vm_side = protocol.Factory.forProtocol(lambda: self.vm_peer)
        self.vm_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(vm_side)
        self.addCleanup(self.vm_port.stopListening)
        self.vm_end = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.vm_port.getHost().port), SpliceEnd())
        self.ended: defer.Deferred = defer.Deferred()
        self.client_end = SpliceEnd(self.vm_end, lambda end: self.ended.callback(end))
        front = protocol.Factory.forProtocol(lambda: self.client_end)
        self.front_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(front)
        self.addCleanup(self.front_port.stopListening)
        self.client = Peer()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.front_port.getHost().port), self.client)

    def buffered(self, front: Any) -> int:
        """Bytes the client's transport holds (Twisted's TCP transport here)."""
        return len(front.dataBuffer) + sum(map(len, front._tempDataBuffer))

    def tearDown(self) -> None:
        for peer in (self.client, self.vm_peer):
            if peer.transport is not None:
                peer.transport.abortConnection()

    @defer.inlineCallbacks
    def test_bytes_sent_before_the_join_are_not_lost(self) -> Generator[Any, Any, None]:
        """What the VM said while the client end was not yet there arrives first."""
        self.vm_peer.transport.write(b"early")
        self.client.transport.write(b"hello vm")
        self.assertEqual((yield self.vm_peer.until(8)), b"hello vm")
        self.vm_peer.transport.write(b" and late")
        self.assertEqual((yield self.client.until(14)), b"early and late")

    @defer.inlineCallbacks
    def test_large_transfers_both_ways(self) -> Generator[Any, Any, None]:
        up, down = os.urandom(8 << 20), os.urandom(8 << 20)
        self.client.transport.write(up)
        self.vm_peer.transport.write(down)
        self.assertEqual((yield self.vm_peer.until(len(up))), up)
        self.assertEqual((yield self.client.until(len(down))), down)

    @defer.inlineCallbacks
    def test_a_slow_reader_pauses_the_writer(self) -> Generator[Any, Any, None]:
        """Backpressure: while the client reads nothing, the L7R stops reading the VM
        instead of buffering what the VM sends."""
        size = 64 << 20
        self.client.transport.pauseProducing()
        self.vm_peer.transport.write(b"x" * size)
        vm_socket = self.vm_end.transport
        for _ in range(500):  # bounded wait for the real sockets to fill up
            if vm_socket not in reactor.getReaders():
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertNotIn(vm_socket, reactor.getReaders(), "the VM side was never paused")
        self.assertLess(self.buffered(self.client_end.transport), 4 << 20,
                        "the L7R buffered what the client could not take")
        self.client.transport.resumeProducing()
        self.assertEqual(len((yield self.client.until(size))), size)

    @defer.inlineCallbacks
    def test_half_close_from_the_client_reaches_the_vm(self) -> Generator[Any, Any, None]:
        self.client.transport.write(b"last words")
        self.client.transport.loseWriteConnection()
        yield self.vm_peer.eof
        self.assertEqual(bytes(self.vm_peer.received), b"last words")
        self.vm_peer.transport.write(b"reply after eof")
        self.assertEqual((yield self.client.until(15)), b"reply after eof")

    @defer.inlineCallbacks
    def test_vm_close_ends_the_session_once(self) -> Generator[Any, Any, None]:
        self.client.close_on_eof = True
        self.vm_peer.transport.write(b"bye")
        self.vm_peer.transport.loseConnection()
        yield self.client.closed
        self.assertEqual(bytes(self.client.received), b"bye")
        end = yield self.ended
        self.assertIsInstance(end, SpliceEnd)
