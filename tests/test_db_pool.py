"""The asynchronous database pool against the suite's real PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator

import psycopg2
from twisted.internet import defer, protocol, reactor, task

from qvd.db import DatabaseError
from qvd.db.pool import ATTEMPTS, BACKOFF, Database
from qvd.stream.sockets import free_port
from qvd.config import Config
from tests.support.pool import PoolTestCase
from tests.support.postgres import cluster

if TYPE_CHECKING:  # not imported at run time: pytest would try to collect it
    from tests.support.postgres import TestDatabase

CONNECT_TIMEOUT = 30
FORCE_40001 = (
    "DO $$ BEGIN RAISE EXCEPTION 'forced conflict' USING ERRCODE = 'serialization_failure'; END $$"
)


class RecordingClock(task.Clock):
    """A Clock that reports every delay scheduled on it, so tests wait instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled: defer.DeferredQueue[float] = defer.DeferredQueue()

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:
        call = super().callLater(delay, f, *args, **kw)
        self.scheduled.put(delay)
        return call

    @defer.inlineCallbacks
    def next_delay(self, ignoring: float = CONNECT_TIMEOUT) -> Generator[Any, Any, float]:
        """The next delay scheduled that is not a connect timeout."""
        while True:
            delay = yield self.scheduled.get()
            if delay != ignoring:
                return delay


def config_for(db: TestDatabase, extra: str = "") -> Config:
    return db.config(f"internal.database.client.connect.timeout = {CONNECT_TIMEOUT}\n" + extra)


def counted(attempts: list[Any], statement: str) -> Callable[[Any], Any]:
    """An interaction running ``statement`` that appends its cursor to ``attempts`` each
    time the pool runs it, so a test sees how often it was retried."""
    def interaction(cursor: Any) -> Any:
        attempts.append(cursor)
        return cursor.execute(statement)
    return interaction


class DatabaseTests(PoolTestCase):
    def started(self, extra: str = "", **kwargs: Any) -> defer.Deferred[Database]:
        return self.start_pool(config_for(self.db, extra), "qvd-test-pool", **kwargs)

    @defer.inlineCallbacks
    def test_queries_operations_and_interactions(self) -> Generator[Any, Any, None]:
        database = yield self.started()
        rows = yield database.run_query("SELECT version FROM versions WHERE component = %s", ("schema",))
        self.assertEqual(rows, [("4.3.0",)])
        yield database.run_operation(
            "INSERT INTO configs (tenant_id, key, value) VALUES (%s, %s, %s)", (-1, "l7r.port", "9443")
        )

        @defer.inlineCallbacks
        def read_back(cursor: Any, key: str) -> Generator[Any, Any, Any]:
            yield cursor.execute("SELECT value FROM configs WHERE tenant_id = -1 AND key = %s", (key,))
            return cursor.fetchone()[0]

        value = yield database.run_interaction(read_back, "l7r.port")
        self.assertEqual(value, "9443")

    @defer.inlineCallbacks
    def test_interaction_is_rolled_back_on_error(self) -> Generator[Any, Any, None]:
        database = yield self.started()

        @defer.inlineCallbacks
        def half_done(cursor: Any) -> Generator[Any, Any, None]:
            yield cursor.execute("INSERT INTO configs VALUES (-1, 'l7r.port', '1')")
            yield cursor.execute("SELECT 1 / 0")

        yield self.assertFailure(database.run_interaction(half_done), psycopg2.errors.DivisionByZero)
        self.assertEqual(self.db.query("SELECT count(*) FROM configs WHERE key = 'l7r.port'"), [(0,)])

    @defer.inlineCallbacks
    def test_real_serialization_conflict_is_retried(self) -> Generator[Any, Any, None]:
        """Two transactions read the same row, both update it: the loser is re-run whole."""
        self.db.query("CREATE TABLE probe (id integer PRIMARY KEY, n integer NOT NULL)")
        self.db.query("INSERT INTO probe VALUES (1, 0)")
        database = yield self.started()
        attempts: list[str] = []
        first_read, second_read, first_done = defer.Deferred(), defer.Deferred(), defer.Deferred()

        @defer.inlineCallbacks
        def increment(cursor: Any, name: str, my_read: Any, wait_for: Any) -> Generator[Any, Any, None]:
            attempts.append(name)
            yield cursor.execute("SELECT n FROM probe WHERE id = 1")
            if not my_read.called:  # first attempt: interleave with the other one
                my_read.callback(None)
                yield wait_for
            yield cursor.execute("UPDATE probe SET n = n + 1 WHERE id = 1")

        one = database.run_interaction(increment, "one", first_read, second_read)
        one.addCallback(first_done.callback)
        two = database.run_interaction(increment, "two", second_read, first_done)
        yield defer.gatherResults([one, two])
        self.assertEqual(sorted(attempts), ["one", "two", "two"])  # "two" lost and was re-run
        self.assertEqual(self.db.query("SELECT n FROM probe"), [(2,)])

    @defer.inlineCallbacks
    def test_retries_back_off_on_the_clock_then_give_up(self) -> Generator[Any, Any, None]:
        clock = RecordingClock()
        database = yield self.started(clock=clock)
        attempts: list[Any] = []
        result = database.run_interaction(counted(attempts, FORCE_40001))
        for n in range(1, ATTEMPTS):
            delay = yield clock.next_delay()
            self.assertTrue(BACKOFF / 2 * 2**n <= delay <= BACKOFF * 2**n, (n, delay))
            self.assertEqual(len(attempts), n)
            clock.advance(delay)
        error = yield self.assertFailure(result, psycopg2.errors.SerializationFailure)
        self.assertEqual(error.pgcode, "40001")
        self.assertEqual(len(attempts), ATTEMPTS)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_close_ends_a_retry_in_waiting(self) -> Generator[Any, Any, None]:
        """No timer outlives the pool; the caller hears the pool is closed."""
        clock = RecordingClock()
        database = yield self.started(clock=clock)
        result = database.run_interaction(lambda cursor: cursor.execute(FORCE_40001))
        yield clock.next_delay()  # fires inside the pool's callLater: let the pool go on first
        yield task.deferLater(reactor, 0, lambda: None)
        yield database.close()
        error = yield self.assertFailure(result, DatabaseError)
        self.assertIn("is closed", str(error))
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_other_errors_propagate_at_once(self) -> Generator[Any, Any, None]:
        clock = RecordingClock()
        database = yield self.started(clock=clock)
        attempts: list[Any] = []
        yield self.assertFailure(
            database.run_interaction(counted(attempts, "SELECT * FROM no_such_table")),
            psycopg2.errors.UndefinedTable)
        yield self.assertFailure(database.run_query("SELECT 1 / 0"), psycopg2.errors.DivisionByZero)
        self.assertEqual(len(attempts), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_start_fails_clearly_when_nobody_listens(self) -> Generator[Any, Any, None]:
        port = free_port()
        error = yield self.assertFailure(self.started(f"database.port = {port}\n"), DatabaseError)
        self.assertIn(f"cannot connect to database {self.db.name!r} on 127.0.0.1:{port}", str(error))

    @defer.inlineCallbacks
    def test_connect_is_bounded_by_the_timeout(self) -> Generator[Any, Any, None]:
        """A server that accepts but never answers cannot hang a connect."""
        accepted: defer.DeferredQueue[Any] = defer.DeferredQueue()
        closed: list[defer.Deferred[None]] = []

        class Silent(protocol.Protocol):
            def connectionMade(self) -> None:
                self.gone: defer.Deferred[None] = defer.Deferred()
                closed.append(self.gone)
                accepted.put(self)

            def connectionLost(self, reason: Any) -> None:
                self.gone.callback(None)

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clock = RecordingClock()
        database = Database(
            config_for(self.db, f"database.port = {port.getHost().port}\n"), clock=clock
        )
        starting = database.start()
        for _ in range(2):  # the default pool size
            yield accepted.get()
        clock.advance(CONNECT_TIMEOUT)
        error = yield self.assertFailure(starting, DatabaseError)
        self.assertIn(f"no answer within {CONNECT_TIMEOUT}s", str(error))
        yield defer.gatherResults(closed)

    @defer.inlineCallbacks
    def test_server_restart_does_not_poison_the_pool(self) -> Generator[Any, Any, None]:
        database = yield self.started()
        self.assertEqual((yield database.run_query("SELECT 1")), [(1,)])
        self.addCleanup(cluster().start)
        cluster().restart()
        try:
            yield database.run_query("SELECT 1")
        except DatabaseError as e:  # it may have run on a connection the restart killed
            self.assertIn("lost the connection", str(e))
        results = yield defer.gatherResults([database.run_query("SELECT 2") for _ in range(5)])
        self.assertEqual(results, [[(2,)]] * 5)
