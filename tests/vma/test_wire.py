"""The golden SimpleRPC transcripts of protocols/simplerpc.md, replayed against a real VMA."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from tests.support.paths import scratch_dir
from tests.support.transcripts import Replay, ReplaysTranscripts, transcripts
from tests.support.vma import make_settings, start_vma


class TranscriptTests(ReplaysTranscripts, unittest.TestCase):
    TRANSCRIPTS = transcripts("simplerpc.md")

    def setUp(self):
        self.directory = scratch_dir(self)
        self.service, _ = start_vma(self, make_settings(self.directory))

    def connect(self, peer: Replay) -> Deferred:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.service.port.getHost().port)
        return connectProtocol(endpoint, peer)

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
