"""The heartbeat on a real QVD-DB, its timers on a ``task.Clock``."""

from __future__ import annotations

from twisted.internet import defer, reactor, task
from twisted.internet.defer import inlineCallbacks

from qvd.db.pool import Database
from qvd.hkd.agents import Heartbeat
from qvd.hkd.context import HKDContext
from tests.support.hkd import HKDTestCase


class NoBackend:
    name = "none"


class HeartbeatTests(HKDTestCase):
    @inlineCallbacks
    def setUp(self):
        super().setUp()
        self.qa("host new name=test-node,address=127.0.0.1")
        self.host_id = self.db.query("SELECT id FROM hosts")[0][0]
        self.db.query("UPDATE host_runtimes SET state = 'running'")
        config = self.db.config("internal.hkd.agent.ticker.delay = 10\n"
                                "internal.hkd.agent.ticker.timeout = 45\n")
        self.database = yield Database(config, "heartbeat-test").start()
        self.addCleanup(self.database.close)
        self.clock = task.Clock()
        self.ctx = HKDContext(config, self.database, self.clock, self.host_id, NoBackend())
        self.addCleanup(self.ctx.close)
        self.lost: defer.Deferred = defer.Deferred()
        self.fatal: defer.Deferred = defer.Deferred()
        self.heartbeat = Heartbeat(
            self.ctx, lambda: self.lost.callback(self.clock.seconds()),
            lambda why: self.fatal.callback((why, self.clock.seconds())))
        self.heartbeat.startService()
        self.addCleanup(self.heartbeat.stopService)
        yield self.heartbeat.first.wait()

    def runtime(self) -> tuple:
        return self.db.query("SELECT ok_ts IS NOT NULL, pid, usable_ram > 0, usable_cpu >= 0"
                             " FROM host_runtimes")[0]

    @inlineCallbacks
    def advance_until(self, event: defer.Deferred, limit: int = 20):
        """Tick after tick (each talks to the real database) until ``event`` fires."""
        for _ in range(limit):
            if event.called:
                return (yield event)
            self.clock.advance(10)
            yield task.deferLater(reactor, 0.1, lambda: None)
        raise AssertionError(f"nothing after {limit} ticks")

    def test_ticks_record_pid_and_live_resources(self):
        ok, pid, ram, cpu = self.runtime()
        self.assertTrue(ok and ram and cpu)
        self.assertGreater(pid, 0)

    @inlineCallbacks
    def test_a_host_marked_lost_fences_itself(self):
        self.db.query("UPDATE host_runtimes SET state = 'lost'")
        yield self.advance_until(self.lost)

    @inlineCallbacks
    def test_no_successful_tick_for_the_timeout_is_fatal(self):
        yield self.database.close()
        why, when = yield self.advance_until(self.fatal)
        self.assertIn("no successful heartbeat for", why)
        self.assertTrue(45 < when <= 60, when)
        self.flushLoggedErrors()
