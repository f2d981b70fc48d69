"""The golden SimpleRPC transcripts of protocols/simplerpc.md, replayed against a real VMA."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial import unittest

from tests.support.paths import scratch_dir
from tests.support.transcripts import transcripts
from tests.support.vma import make_settings, start_vma

TRANSCRIPTS = transcripts("simplerpc.md")


class Replay(Protocol):
    """Sends the client side; done when the expected byte count arrived or the peer closed."""

    def __init__(self, sent: bytes, expected_length: int, wait_for_close: bool):
        self.sent = sent
        self.expected_length = expected_length
        self.wait_for_close = wait_for_close
        self.received = b""
        self.closed = False
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.sent)

    def dataReceived(self, data):
        self.received += data
        if not self.wait_for_close and len(self.received) >= self.expected_length:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.received)


class TranscriptTests(unittest.TestCase):
    def setUp(self):
        self.directory = scratch_dir(self)
        self.service, _ = start_vma(self, make_settings(self.directory))

    @inlineCallbacks
    def replay(self, name: str):
        transcript = TRANSCRIPTS[name]
        (sent, expected), closes = transcript.whole(), transcript.closes
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.service.port.getHost().port)
        peer = Replay(sent, len(expected), closes)
        yield connectProtocol(endpoint, peer)
        received = yield peer.done.addTimeout(10, reactor)
        self.assertEqual(received, expected)

    def test_all_transcripts_are_replayed(self):
        names = {n[len("test_") :].replace("_", "-") for n in dir(self) if n.startswith("test_")}
        self.assertLessEqual(set(TRANSCRIPTS), names)

    def test_ping_bare_lf(self):
        return self.replay("ping-bare-lf")

    def test_keep_alive(self):
        return self.replay("keep-alive")

    @inlineCallbacks
    def test_error_injection(self):
        yield self.replay("error-injection")
        self.assertIsNone(self.service.session._xinit)
        self.assertFalse(os.path.exists(self.service.settings.nxagent_log))

    def test_unknown_method(self):
        return self.replay("unknown-method")

    def test_post(self):
        return self.replay("post")

    def test_wrong_version(self):
        return self.replay("wrong-version")
