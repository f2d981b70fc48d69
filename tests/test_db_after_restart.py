"""QVD-DB restarted under the daemons (the suite's real PostgreSQL).

* The first statement after a restart may be sent on a connection the restart killed
  before the pool heard of it: a read is then run once more on a fresh connection
  (``run_read``); anything else fails with ``ConnectionLost``, since it may have run.
* The cluster monitor counts a host's silence from its last heartbeat or from the
  server's start, whichever is later: no host could tick while QVD-DB was down.
"""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from qvd.db import runtimes
from qvd.db.pool import ConnectionLost, Database
from tests.support.pool import PoolTestCase
from tests.support.postgres import cluster


class AfterRestartTests(PoolTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(cluster().start)

    def started(self) -> defer.Deferred[Database]:
        return self.start_pool(self.db.config("internal.database.pool.size = 1\n"), "qvd-test")

    @defer.inlineCallbacks
    def test_a_read_is_run_again_on_a_fresh_connection(self) -> Generator[Any, Any, None]:
        database = yield self.started()
        cluster().restart()  # blocking: the pool cannot notice before the next statement
        rows = yield database.run_read("SELECT count(*) FROM hosts")
        self.assertEqual(rows, [(0,)])

    @defer.inlineCallbacks
    def test_other_statements_are_not_run_twice(self) -> Generator[Any, Any, None]:
        database = yield self.started()
        cluster().restart()
        yield self.assertFailure(
            database.run_operation("INSERT INTO tenants (name) VALUES ('t1')"), ConnectionLost)
        self.assertEqual(self.db.query("SELECT count(*) FROM tenants WHERE name = 't1'"),
                         [(0,)])
        yield database.run_operation("INSERT INTO tenants (name) VALUES ('t1')")  # reconnected

    @defer.inlineCallbacks
    def test_silence_counts_from_the_servers_start(self) -> Generator[Any, Any, None]:
        database = yield self.started()
        for name in ("me", "other"):
            self.db.query("INSERT INTO hosts (name, address, frontend, backend)"
                          " VALUES (%s, %s, TRUE, TRUE)", (name, name))
            self.db.query("INSERT INTO host_runtimes (host_id, state, blocked)"
                          " SELECT id, 'running', FALSE FROM hosts WHERE name = %s", (name,))
        [(me,), (other,)] = self.db.query("SELECT id FROM hosts ORDER BY name")
        # the other host's last tick is 1000 s older than the server's start...
        self.db.query("UPDATE host_runtimes SET ok_ts = (pg_postmaster_start_time()"
                      " AT TIME ZONE 'UTC') - interval '1000 seconds'")
        [(up,)] = self.db.query("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())")
        # ...but the server has been up for less than the timeout: not lost
        lost = (yield runtimes.release_lost_hosts(database, me, float(up) + 500, 0)).lost
        self.assertEqual(lost, [])
        # a timeout the server's uptime exceeds: lost
        lost = (yield runtimes.release_lost_hosts(database, me, 0, 0)).lost
        self.assertEqual(lost, [other])
