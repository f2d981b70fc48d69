"""LISTEN/NOTIFY for the daemons, on a dedicated connection that heals itself.

A NOTIFY sent while the connection is down is lost for good, so after
every reconnect (LISTENs re-issued first) the ``on_reconnect`` callbacks
run: each consumer re-reads whatever state it follows.  A server restart
is noticed at once even when idle (the server closes the socket, which
txpostgres watches); a silent network failure by the TCP keepalives set
in ``connect_kwargs``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Generator, Optional

import psycopg2.extensions
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.config import Config
from qvd.db import connect_kwargs, describe
from qvd.db.pool import Connection, first_line
from qvd.reactor import default_reactor

log = Logger()

CHANNEL = re.compile(r"^[a-z_][a-z0-9_]*$")
INITIAL_DELAY = 0.1
MAX_DELAY = 10.0

NotifyCallback = Callable[[str, str], None]


def _quoted(channel: str) -> str:
    if not CHANNEL.match(channel):
        raise ValueError(f"bad NOTIFY channel name {channel!r}")
    return f'"{channel}"'


class Listener:
    """One connection LISTENing on any number of channels.

    ``reactor`` watches the socket; ``clock`` (the reactor by default)
    times connects and reconnection backoffs.
    """

    def __init__(
        self,
        config: Config,
        name: str = "qvd-listener",
        *,
        reactor: Optional[IReactorFDSet] = None,
        clock: Optional[IReactorTime] = None,
        initial_delay: float = INITIAL_DELAY,
        max_delay: float = MAX_DELAY,
    ):
        self.reactor = reactor or default_reactor()
        self.clock = clock or self.reactor
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._kwargs = connect_kwargs(config, name)
        self._timeout = config.get_float("internal.database.client.connect.timeout")
        self.where = describe(self._kwargs)
        self._channels: dict[str, list[NotifyCallback]] = {}
        self._reconnect_handlers: list[Callable[[], None]] = []
        self._connection: Optional[Connection] = None
        self._retry: Optional[IDelayedCall] = None
        self._delay = initial_delay
        self._stopped = True
        self.reconnects = 0  # LISTEN connections restored since start

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.alive

    def start(self) -> defer.Deferred[None]:
        """Connect and LISTEN; fails (no retry) if the first connect fails."""
        self._stopped = False
        self._delay = self.initial_delay
        return self._connect()

    def stop(self) -> defer.Deferred[None]:
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return defer.succeed(None)

    def listen(self, channel: str, callback: NotifyCallback) -> defer.Deferred[None]:
        """Call ``callback(channel, payload)`` for every NOTIFY on ``channel``.

        Fires once the LISTEN is in effect, or at once when disconnected
        (the LISTEN is then issued on the next connect).
        """
        sql = f"LISTEN {_quoted(channel)}"
        first = channel not in self._channels
        self._channels.setdefault(channel, []).append(callback)
        return self._issue(sql) if first else defer.succeed(None)

    def unlisten(self, channel: str, callback: NotifyCallback) -> defer.Deferred[None]:
        sql = f"UNLISTEN {_quoted(channel)}"
        callbacks = self._channels.get(channel, [])
        if callback not in callbacks:
            return defer.succeed(None)
        callbacks.remove(callback)
        if callbacks:
            return defer.succeed(None)
        del self._channels[channel]
        return self._issue(sql)

    def on_reconnect(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` after each reconnect, once the LISTENs are back."""
        self._reconnect_handlers.append(handler)

    def remove_on_reconnect(self, handler: Callable[[], None]) -> None:
        if handler in self._reconnect_handlers:
            self._reconnect_handlers.remove(handler)

    def _issue(self, sql: str) -> defer.Deferred[None]:
        """Run a (UN)LISTEN now if connected; a loss meanwhile is the reconnect's job."""
        connection = self._connection
        if connection is None or not connection.alive:
            return defer.succeed(None)

        def failed(reason: Failure) -> Optional[Failure]:
            return None if not connection.alive else reason

        return connection.runOperation(sql).addErrback(failed)

    @defer.inlineCallbacks
    def _connect(self) -> Generator[defer.Deferred[Any], Any, None]:
        connection = Connection(self.reactor, self.clock, self._timeout)
        self._connection = connection
        try:
            yield connection.open(self._kwargs)
            connection.addNotifyObserver(self._dispatch)
            for channel in list(self._channels):
                yield connection.runOperation(f"LISTEN {_quoted(channel)}")
        except Exception:
            connection.close()
            raise
        connection.on_lost = self._lost

    def _dispatch(self, notify: psycopg2.extensions.Notify) -> None:
        for callback in list(self._channels.get(notify.channel, ())):
            try:
                callback(notify.channel, notify.payload)
            except Exception:
                log.failure("NOTIFY callback for {channel} failed", channel=notify.channel)

    def _lost(self, reason: Failure) -> None:
        log.warn("lost LISTEN connection to {db}: {error}", db=self.where, error=first_line(reason.value))
        self._schedule()

    def _schedule(self) -> None:
        if self._stopped:
            return
        delay, self._delay = self._delay, min(self._delay * 2, self.max_delay)
        self._retry = self.clock.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._retry = None
        self._connect().addCallbacks(self._reconnected, self._reconnect_failed)

    def _reconnected(self, _: object) -> None:
        self._delay = self.initial_delay
        self.reconnects += 1
        log.info("LISTEN connection to {db} restored", db=self.where)
        for handler in list(self._reconnect_handlers):
            try:
                handler()
            except Exception:
                log.failure("reconnect handler {handler!r} failed", handler=handler)

    def _reconnect_failed(self, reason: Failure) -> None:
        if self._stopped:
            return
        log.warn(
            "cannot restore LISTEN connection to {db}: {error}; next attempt in {delay:g}s",
            db=self.where, error=first_line(reason.value), delay=self._delay,
        )
        self._schedule()
