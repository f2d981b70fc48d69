"""x_state: the raw→x_state map, dead pids, and the state timeouts (task.Clock).

A real ``sleep`` process stands in for nxagent's pid, so signals are real.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from qvd.vma import state
from qvd.vma.hooks import Hooks
from qvd.vma.session import XSession
from tests.support.paths import scratch_dir
from tests.support.processes import Child
from tests.support.vma import make_settings

# reference §3.3's table, x_state by x_state: the raw states each one stands for
RAW_STATES = {
    "starting": ["initiating"],
    "provisioning": ["provisioning"],
    "listening": ["starting", "resuming"],
    "connected": ["started", "resumed"],
    "suspending": ["suspending"],
    "suspended": ["suspended"],
    "stopping": ["terminating", "aborting"],
    "stopped": ["terminated", "aborted", "stopped", "", "bogus"],  # and unknown ones
}
EXPECTED = {raw: x for x, raws in RAW_STATES.items() for raw in raws}


class StateTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        settings = make_settings(scratch_dir(self))
        os.makedirs(settings.run_dir)
        os.makedirs(settings.log_dir)
        self.session = XSession(reactor, settings, Hooks(reactor, settings), clock=self.clock)
        self.files = self.session.files
        self.nxagent = Child(self, ["/bin/sleep", "60"], {})
        self.files.write_pid(self.nxagent.process.pid)

    def set(self, raw: str, age: float = 0) -> None:
        self.files.write_state(raw, self.clock.seconds() - age)

    def test_map(self):
        for raw, expected in EXPECTED.items():
            self.assertEqual(state.x_state(raw), expected, raw)

    def test_x_state_with_live_nxagent(self):
        for raw, expected in EXPECTED.items():
            self.set(raw)
            self.files.write_pid(self.nxagent.process.pid)
            self.assertEqual(self.session.x_state(), expected, raw)

    def test_no_state_file_is_stopped(self):
        self.files.delete()
        self.assertEqual(self.session.x_state(), "stopped")

    def test_final_state_deletes_the_files(self):
        self.set("terminated")
        self.assertEqual(self.session.x_state(), "stopped")
        self.assertFalse(os.path.exists(self.files.state_path))
        self.assertFalse(os.path.exists(self.files.pid_path))

    @inlineCallbacks
    def test_dead_nxagent_is_stopped(self):
        yield self.nxagent.stop()
        for raw in ("starting", "started", "suspending", "suspended"):
            self.set(raw)
            self.files.write_pid(self.nxagent.process.pid)
            self.assertEqual(self.session.x_state(), "stopped", raw)
            self.assertFalse(os.path.exists(self.files.state_path))

    @inlineCallbacks
    def test_listening_timeout_terminates(self):
        self.set("starting", age=10)
        self.assertEqual(self.session.x_state(), "listening")
        self.set("starting", age=12)
        self.assertEqual(self.session.x_state(), "stopping")
        self.assertEqual(self.files.read_state().state, "terminating")
        yield self.nxagent.protocol.ended  # SIGTERM really reached it
        self.assertEqual(self.nxagent.process.status, 15)

    @inlineCallbacks
    def test_stopping_timeout_kills(self):
        self.set("terminating", age=21)
        self.assertEqual(self.session.x_state(), "stopping")
        yield self.nxagent.protocol.ended
        self.assertEqual(self.nxagent.process.status, 9)

    def test_starting_timeout_applies(self):
        """QVD 4 never applied internal.nxagent.timeout.initiating; we do."""
        self.set("initiating", age=19)
        self.assertEqual(self.session.x_state(), "starting")
        self.set("initiating", age=21)
        self.assertEqual(self.session.x_state(), "stopping")

    def test_connected_and_suspended_never_time_out(self):
        for raw in ("started", "suspended", "provisioning"):
            self.set(raw, age=100_000)
            self.assertNotEqual(self.session.x_state(), "stopping", raw)

    def test_state_file_format(self):
        self.set("suspended")
        with open(self.files.state_path) as f:
            self.assertEqual(f.read(), f"suspended:{int(self.clock.seconds())}\n")
