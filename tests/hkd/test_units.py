"""Clock-driven tests of the HKD's timers: the VMA monitor, periodic agents, the heavy limit."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest

from qvd.config import Config
from qvd.hkd.context import HKDContext
from qvd.hkd.periodic import Periodic
from qvd.hkd.vma import MonitorLimits, VMAMonitor


class FakePings:
    """The VMA's answers, scripted: a test stand-in for the network."""

    def __init__(self) -> None:
        self.ok = True
        self.calls = 0

    def __call__(self) -> defer.Deferred:
        self.calls += 1
        return defer.succeed(1) if self.ok else defer.fail(ConnectionRefusedError())


class VMAMonitorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.pings = FakePings()
        self.events: list[str] = []
        self.monitor = VMAMonitor(self.clock, self.pings, MonitorLimits(120, 10, 10, 320),
                                  lambda: self.events.append("alive"),
                                  lambda: self.events.append("dead"))

    def test_pings_at_once_then_after_the_ok_delay(self):
        self.monitor.start()
        self.assertEqual((self.pings.calls, self.events), (1, ["alive"]))
        self.clock.advance(119)
        self.assertEqual(self.pings.calls, 1)
        self.clock.advance(1)
        self.assertEqual((self.pings.calls, self.events), (2, ["alive", "alive"]))

    def test_dead_needs_both_the_count_and_the_time(self):
        """QVD 4: >= max_count failures and > max_time since the last answer."""
        self.monitor.start()
        self.pings.ok = False
        self.clock.advance(120)  # failure 1 at t=120
        self.clock.pump([10] * 9)  # failures 2..10 at t=210: count reached, 210 s silent
        self.assertEqual(self.events, ["alive"])
        self.clock.pump([10] * 11)  # t=320: not yet more than 320 s
        self.assertEqual(self.events, ["alive"])
        self.clock.advance(10)  # t=330
        self.assertEqual(self.events, ["alive", "dead"])
        calls = self.pings.calls
        self.clock.advance(1000)
        self.assertEqual(self.pings.calls, calls, "a dead verdict ends the monitor")

    def test_an_answer_resets_the_count(self):
        self.monitor.start()
        self.pings.ok = False
        self.clock.pump([120] + [10] * 8)  # 9 failures
        self.pings.ok = True
        self.clock.advance(10)
        self.pings.ok = False
        self.clock.pump([120] + [10] * 8)  # 9 more
        self.assertEqual(self.events, ["alive", "alive"])

    def test_stop_ignores_a_late_answer(self):
        late: defer.Deferred = defer.Deferred()
        monitor = VMAMonitor(self.clock, lambda: late, MonitorLimits(1, 1, 1, 0),
                             lambda: self.events.append("alive"), lambda: None)
        monitor.start()
        monitor.stop()
        late.callback(1)
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PeriodicTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.runs: list[defer.Deferred] = []

    def action(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.runs.append(d)
        return d

    def test_polls_and_coalesces_triggers(self):
        agent = Periodic("t", self.clock, self.action, lambda failed: 60 if not failed else 5)
        agent.startService()
        self.assertEqual(len(self.runs), 1)
        agent.trigger()
        agent.trigger()
        self.assertEqual(len(self.runs), 1, "never two runs at once")
        self.runs[0].callback(None)
        self.assertEqual(len(self.runs), 2, "one more run for the triggers that came meanwhile")
        self.runs[1].callback(None)
        self.clock.advance(59)
        self.assertEqual(len(self.runs), 2)
        self.clock.advance(1)
        self.assertEqual(len(self.runs), 3)
        self.runs[2].errback(RuntimeError("db down"))
        self.clock.advance(5)
        self.assertEqual(len(self.runs), 4, "the failure delay applies after a failure")
        self.flushLoggedErrors(RuntimeError)
        stopped = agent.stopService()
        self.assertNoResult(stopped)
        self.runs[3].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_run_can_wait_for_the_delay(self):
        agent = Periodic("t", self.clock, self.action, lambda failed: 30, run_at_start=False)
        agent.startService()
        self.assertEqual(self.runs, [])
        self.clock.advance(30)
        self.assertEqual(len(self.runs), 1)


class FakeHypervisor:
    name = "fake"


class HeavyLimitTests(unittest.TestCase):
    def test_max_heavy_follows_reloads(self):
        config = Config({"internal.hkd.max_heavy": "2"})
        ctx = HKDContext(config, None, task.Clock(), 1, FakeHypervisor())
        holders = [ctx.heavy.acquire() for _ in range(4)]
        self.assertEqual([d.called for d in holders], [True, True, False, False])
        config.replace_db_rows([(-1, "internal.hkd.max_heavy", "3")])
        self.assertEqual([d.called for d in holders], [True, True, True, False])
        config.replace_db_rows([(-1, "internal.hkd.max_heavy", "1")])
        ctx.heavy.release()
        ctx.heavy.release()
        self.assertFalse(holders[3].called, "over the new limit until enough are released")
        ctx.heavy.release()
        self.assertTrue(holders[3].called)
        ctx.close()
