"""Asynchronous QVD-DB access for the daemons: a small txpostgres pool.

Every QVD session is SERIALIZABLE (the deploy sets it as the database
default), so concurrent transactions can fail with SQLSTATE 40001 (or
deadlock, 40P01); ``Database`` re-runs the whole statement or interaction
a few times with a short randomised backoff before giving up.  A read-only
statement (``run_read``) whose connection turns out to be dead is run once
more on a fresh connection: the first statement after a server restart
would otherwise fail whenever it beats the closed socket's news.

A connection whose server went away (restart, network failure) is closed
and quietly reconnected the next time it is checked out, so one restart
costs at most the statement that was running on it.  We do not use
txpostgres' ``DeadConnectionDetector``: it fails every call while it
reconnects in the background, reconnects without a timeout, and logs
through the legacy ``log.err``; reconnecting on checkout is simpler and
never hands out a connection known to be dead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

import psycopg2
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres import txpostgres

from qvd.config import Config
from qvd.db import DatabaseError, connect_kwargs, describe
from qvd.reactor import default_reactor

log = Logger()

DEADLOCK_DETECTED = "40P01"
RETRYABLE = frozenset({"40001", DEADLOCK_DETECTED})
ATTEMPTS = 5
BACKOFF = 0.05  # seconds; attempt n waits between BACKOFF/2 * 2**n and BACKOFF * 2**n


class ConnectionLost(DatabaseError):
    """The connection broke under the statement (a restarted server, a cut network)."""


def first_line(error: BaseException) -> str:
    """The useful part of a (multi-line) libpq message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Connection(txpostgres.Connection):
    """A txpostgres connection that bounds its connect and notices its own death.

    txpostgres raises from ``doRead`` when the server closes an idle
    connection (a restart); the reactor would log that as an unhandled
    error and forget the socket.  Here it becomes a call to ``on_lost``,
    as does a statement failing because the connection broke under it.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        timeout: float,
        on_lost: Optional[Callable[[Failure], None]] = None,
    ):
        super().__init__(reactor)
        self.clock = clock
        self.timeout = timeout
        self.on_lost = on_lost
        self._open = False

    @property
    def alive(self) -> bool:
        return self._open and not self._connection.closed

    def open(self, kwargs: dict[str, Any]) -> defer.Deferred[None]:
        """Connect within ``timeout`` seconds (libpq ignores connect_timeout when async)."""
        self.close()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            self.close()

        timer = self.clock.callLater(self.timeout, expire)

        def connected(_: object) -> None:
            timer.cancel()
            self._open = True

        def failed(reason: Failure) -> None:
            if timer.active():
                timer.cancel()
            self.close()
            if expired:
                raise DatabaseError(
                    f"cannot connect to {describe(kwargs)}: no answer within {self.timeout:g}s"
                )
            raise DatabaseError(
                f"cannot connect to {describe(kwargs)}: {first_line(reason.value)}"
            ) from reason.value

        return self.connect(**kwargs).addCallbacks(connected, failed)

    def close(self) -> None:
        """Close without reporting a loss (safe to repeat, and before any connect)."""
        self._open = False
        if self._connection is not None:
            super().close()

    def doRead(self) -> None:
        try:
            super().doRead()
        except Exception:
            self._lost(Failure())

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self._lost(reason)

    def _doit(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        def check(reason: Failure) -> Failure:
            if self._open and self._connection.closed:
                self._lost(reason)
            return reason

        return super()._doit(method, *args, **kwargs).addErrback(check)

    @defer.inlineCallbacks
    def _runInteraction(
        self, interaction: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Generator[defer.Deferred[Any], Any, Any]:
        """BEGIN, run, COMMIT; on error roll back unless the connection is gone.

        Replaces txpostgres' version, which logs through ``log.err`` and
        wraps the error in ``RollbackFailed`` when the server has died.
        """
        cursor = self.cursor()
        yield cursor.execute("BEGIN")
        try:
            result = yield interaction(cursor, *args, **kwargs)
            yield cursor.execute("COMMIT")
        except Exception:
            if not self._connection.closed:
                try:
                    yield cursor.execute("ROLLBACK")
                except psycopg2.Error:
                    self._lost(Failure())
            raise
        return result

    def _lost(self, reason: Failure) -> None:
        if not self._open:
            return
        self.close()
        if self.on_lost is not None:
            self.on_lost(reason)


class _Pool(txpostgres.ConnectionPool):
    """txpostgres' pool, reconnecting dead connections when they are checked out."""

    def __init__(
        self,
        reactor: IReactorFDSet,
        clock: IReactorTime,
        size: int,
        timeout: float,
        kwargs: dict[str, Any],
    ):
        self.reactor = reactor
        self.connectionFactory = lambda reactor, cooperator: Connection(
            reactor, clock, timeout, self._lost
        )
        self.kwargs = kwargs
        self.where = describe(kwargs)
        super().__init__(None, min=size)
        self.members = list(self.connections)

    def start(self) -> defer.Deferred[None]:
        opening = defer.DeferredList(
            [c.open(self.kwargs) for c in self.members], fireOnOneErrback=True, consumeErrors=True
        )

        def failed(reason: Failure) -> Failure:
            self.close()
            return reason.value.subFailure

        return opening.addCallbacks(lambda _: None, failed)

    def close(self) -> None:
        for connection in self.members:
            connection.close()

    def _lost(self, reason: Failure) -> None:
        log.warn("lost a connection to {db}: {error}", db=self.where, error=first_line(reason.value))

    def _run(self, method: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        connection = self.connections.pop()
        ready = defer.succeed(None) if connection.alive else connection.open(self.kwargs)
        d = ready.addCallback(lambda _: getattr(connection, method)(*args, **kwargs))
        d.addErrback(self._failed, connection)
        return d.addBoth(self._putBackAndPassthrough, connection)

    def _failed(self, reason: Failure, connection: Connection) -> Failure:
        if reason.check(DatabaseError) or connection.alive:
            return reason
        # A dead connection usually means a restarted server or a broken
        # network: its idle siblings are suspect too, so renew them on use.
        for idle in list(self.connections):
            idle.close()
        raise ConnectionLost(
            f"lost the connection to {self.where}: {first_line(reason.value)}"
        ) from reason.value

    def _runQuery(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._run("runQuery", *args, **kwargs)

    def _runOperation(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._run("runOperation", *args, **kwargs)

    def _runInteraction(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        return self._run("runInteraction", *args, **kwargs)


@dataclass(frozen=True)
class PoolUsage:
    """How busy the pool is now (the metrics, ``qvd.metrics.database``)."""

    size: int
    in_use: int
    waiting: int  # calls queued for a free connection


class Database:
    """The daemons' pool of QVD-DB connections.

    ``reactor`` watches the sockets; ``clock`` (the reactor by default)
    times connects and retry backoffs, so tests can drive them.
    """

    def __init__(
        self,
        config: Config,
        name: str = "qvd",
        *,
        reactor: Optional[IReactorFDSet] = None,
        clock: Optional[IReactorTime] = None,
        attempts: int = ATTEMPTS,
    ):
        reactor = reactor or default_reactor()
        self.clock = clock or reactor
        self.attempts = attempts
        kwargs = connect_kwargs(config, name)
        self.where = describe(kwargs)
        self._pool = _Pool(
            reactor,
            self.clock,
            max(1, config.get_int("internal.database.pool.size", default=2)),
            config.get_float("internal.database.client.connect.timeout"),
            kwargs,
        )
        self._closed = False
        self._backoffs: set[defer.Deferred[None]] = set()
        self.retries = 0  # statements re-run after 40001/40P01, since start

    def usage(self) -> PoolUsage:
        gate = self._pool._semaphore
        return PoolUsage(gate.limit, gate.limit - gate.tokens, len(gate.waiting))

    def start(self) -> defer.Deferred[Database]:
        """Open every connection now, so a bad configuration shows at start-up."""
        return self._pool.start().addCallback(lambda _: self)

    def close(self) -> defer.Deferred[None]:
        """Close the connections; a statement waiting to be retried fails now."""
        self._closed = True
        for backoff in list(self._backoffs):
            backoff.cancel()
        self._pool.close()
        return defer.succeed(None)

    def run_query(self, sql: str, params: Any = None) -> defer.Deferred[list[tuple[Any, ...]]]:
        """One statement in its own transaction; its rows."""
        return self._retrying(self._pool.runQuery, sql, params)

    def run_read(self, sql: str, params: Any = None) -> defer.Deferred[list[tuple[Any, ...]]]:
        """A read-only statement: ``run_query``, run once more on a fresh connection if
        its connection was dead (reading twice changes nothing; a write might have been
        done before the connection broke, so only reads are run again)."""
        return self._retrying(self._read, sql, params)

    @defer.inlineCallbacks
    def _read(self, sql: str, params: Any) -> Generator[defer.Deferred[Any], Any, Any]:
        try:
            return (yield self._pool.runQuery(sql, params))
        except ConnectionLost as e:
            log.info("{error}; reading again on a fresh connection", error=e)
        return (yield self._pool.runQuery(sql, params))

    def run_operation(self, sql: str, params: Any = None) -> defer.Deferred[None]:
        """One statement in its own transaction, rows discarded."""
        return self._retrying(self._pool.runOperation, sql, params)

    def run_interaction(
        self, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> defer.Deferred[Any]:
        """``fn(cursor, *args, **kwargs)`` in one transaction, re-run whole on 40001/40P01.

        ``fn`` may be run several times, so it must not have effects outside
        the transaction that a retry would repeat.
        """
        return self._retrying(self._pool.runInteraction, fn, *args, **kwargs)

    def _retrying(
        self, call: Callable[..., defer.Deferred[Any]], *args: Any, **kwargs: Any
    ) -> defer.Deferred[Any]:
        """``call`` once; again after a backoff on 40001/40P01, up to ``attempts`` times.
        (Plain callbacks, no generator: every statement of every request comes here.)"""
        return self._attempt(1, call, args, kwargs)

    def _attempt(self, attempt: int, call: Callable[..., defer.Deferred[Any]],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> defer.Deferred[Any]:
        if self._closed:
            return defer.fail(DatabaseError(f"the pool for {self.where} is closed"))
        return call(*args, **kwargs).addErrback(self._failed, attempt, call, args, kwargs)

    def _failed(self, failure: Failure, attempt: int, call: Callable[..., defer.Deferred[Any]],
                args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        error = failure.value
        if (not isinstance(error, psycopg2.Error) or error.pgcode not in RETRYABLE
                or attempt >= self.attempts):
            return failure
        delay = random.uniform(BACKOFF / 2, BACKOFF) * 2**attempt
        self.retries += 1
        log.debug(
            "transaction failed ({code}: {error}), retry {attempt} in {delay:.3f}s",
            code=error.pgcode, error=first_line(error), attempt=attempt, delay=delay,
        )
        backoff = task.deferLater(self.clock, delay, lambda: None)
        self._backoffs.add(backoff)

        def waited(result: Any) -> Any:
            self._backoffs.discard(backoff)
            if isinstance(result, Failure) and result.check(defer.CancelledError):
                raise DatabaseError(f"the pool for {self.where} is closed") from None
            return self._attempt(attempt + 1, call, args, kwargs)

        return backoff.addBoth(waited)
