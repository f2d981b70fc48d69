"""The golden slave-channel transcripts of protocols/slave.md, replayed against a real
VMA through the real hand-off: each channel is one end of a socket pair given to the
generated ``NX_SLAVE_CMD`` script as its standard input, as nxagent does."""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from tests.support.paths import scratch_dir
from tests.support.processes import Child
from tests.support.transcripts import Replay, ReplaysTranscripts, replays, transcripts
from tests.support.vma import make_settings, start_vma

KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZab"


class SlaveTranscriptTests(ReplaysTranscripts, unittest.TestCase):
    TRANSCRIPTS = transcripts("slave.md")

    def setUp(self):
        self.directory = scratch_dir(self)
        self.settings = make_settings(self.directory, **{"vma.slave.enable": "1"})
        self.service, _ = start_vma(self, self.settings)
        self.service.session.channels.key = KEY  # what x_start stores

    def test_the_handoff_command_is_runnable_by_anyone(self):
        mode = os.stat(self.settings.slave_handoff).st_mode
        self.assertEqual(mode & 0o755, 0o755)
        self.assertEqual(os.stat(self.settings.slave_socket).st_mode & 0o777, 0o600)

    @inlineCallbacks
    def connect(self, peer: Replay):
        """Through the hand-off command, as nxagent runs it for each slave channel."""
        ours, nxagents = socket.socketpair()
        self.addCleanup(ours.close)
        handoff = Child(self, [self.settings.slave_handoff], {"PATH": "/usr/bin:/bin"},
                        stdin=nxagents.fileno())
        nxagents.close()
        yield handoff.protocol.ended
        self.assertEqual(handoff.protocol.output, b"")
        ours.setblocking(False)
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX,
                                      Factory.forProtocol(lambda: peer))

    test_no_key = replays("no-key")
    test_wrong_key = replays("wrong-key")
    test_no_upgrade_no_session = replays("no-upgrade-no-session")
    test_wrong_method = replays("wrong-method")
