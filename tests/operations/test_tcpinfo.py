"""A session's bytes each way, read from the kernel once its VM side is closed (no counting
in the splice), over real loopback sockets and the real splice."""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.trial import unittest

from qvd.stream.splice import SpliceEnd
from qvd.stream.tcpinfo import Bytes, Tally
from tests.l7r.test_splice import Peer


class TallyTests(unittest.TestCase):
    """client <-> [client end | vm end] <-> vm, the tally on the VM end's socket."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.vm_peer = Peer(close_on_eof=True)
        self.vm_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: self.vm_peer))
        self.addCleanup(self.vm_port.stopListening)
        self.vm_end = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.vm_port.getHost().port), SpliceEnd())
        self.tally = Tally.of(self.vm_end.transport)
        self.client_end = SpliceEnd(self.vm_end, lambda end: None)
        self.front = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: self.client_end))
        self.addCleanup(self.front.stopListening)
        self.client = Peer(close_on_eof=True)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.front.getHost().port), self.client)

    @defer.inlineCallbacks
    def tearDown(self) -> Generator[Any, Any, None]:
        for peer in (self.client, self.vm_peer):
            if peer.transport is not None and peer.transport.connected:
                peer.transport.abortConnection()
                yield peer.closed
        if self.tally is not None:
            self.tally.read()

    @defer.inlineCallbacks
    def test_client_closes_first_right_after_its_last_bytes(self) -> Generator[Any, Any, None]:
        """The last bytes may still be in the L7R's buffer when the client's close arrives:
        they are counted once the VM side has written them and closed."""
        down = os.urandom(300_000)
        self.vm_peer.transport.write(down)
        self.assertEqual(len((yield self.client.until(len(down)))), len(down))
        up = os.urandom(5_000_000)
        self.client.transport.write(up)
        self.client.transport.loseConnection()
        yield self.vm_end.gone.wait()
        self.assertEqual(self.tally.read(), Bytes(sent=len(up), received=len(down)))
        yield self.vm_peer.closed
        self.assertEqual(len(self.vm_peer.received), len(up))

    @defer.inlineCallbacks
    def test_vm_closes_first(self) -> Generator[Any, Any, None]:
        self.client.transport.write(b"hello vm")
        yield self.vm_peer.until(8)
        self.vm_peer.transport.write(b"bye")
        self.vm_peer.transport.loseConnection()
        yield self.client.closed
        yield self.vm_end.gone.wait()
        self.assertEqual(self.tally.read(), Bytes(sent=8, received=3))
        self.assertIsNone(self.tally.read(), "read once")

    def test_only_tcp_sockets(self) -> None:
        self.assertIsNone(Tally.of(object()))
