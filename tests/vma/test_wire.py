"""The golden SimpleRPC transcripts of protocols/simplerpc.md, replayed against a real VMA."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from tests.support.paths import scratch_dir
from tests.support.transcripts import Replay, ReplaysTranscripts, replays, transcripts
from tests.support.vma import make_settings, start_vma


class TranscriptTests(ReplaysTranscripts, unittest.TestCase):
    TRANSCRIPTS = transcripts("simplerpc.md")

    def setUp(self):
        self.directory = scratch_dir(self)
        self.service, _ = start_vma(self, make_settings(self.directory))

    def connect(self, peer: Replay) -> Deferred:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.service.port.getHost().port)
        return connectProtocol(endpoint, peer)

    test_ping_bare_lf = replays("ping-bare-lf")
    test_keep_alive = replays("keep-alive")

    @inlineCallbacks
    def test_error_injection(self):
        yield self.replay("error-injection")
        self.assertIsNone(self.service.session._xinit)
        self.assertFalse(os.path.exists(self.service.settings.nxagent_log))

    test_unknown_method = replays("unknown-method")
    test_post = replays("post")
    test_wrong_version = replays("wrong-version")
