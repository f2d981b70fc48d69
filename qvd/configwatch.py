"""Live configuration: ``configs`` rows reloaded on NOTIFY ``qvd_config_changed``.

As in QVD 4 the whole table is re-read on every notification (the payload
only names a tenant).  Unlike QVD 4 a change made while the LISTEN
connection was down is not lost: every reconnect reloads too.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

import psycopg2
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from qvd.config import Config, ConfigError
from qvd.db import DatabaseError
from qvd.db.channels import CONFIG_CHANGED
from qvd.db.configs import load_configs
from qvd.db.listener import Listener
from qvd.db.pool import Database
from qvd.db.pool import first_line
from qvd.reactor import default_reactor

log = Logger()

RETRY_KEY = "internal.hkd.agent.config.delay"
DEFAULT_RETRY_DELAY = 10.0


class ConfigWatcher(Service):
    """Keeps ``config``'s database layer in step with the ``configs`` tables.

    The listener's life (start/stop) belongs to whoever created it: it is
    shared by every consumer of NOTIFYs in the process.
    """

    name = "config-watcher"

    def __init__(
        self,
        config: Config,
        database: Database,
        listener: Listener,
        *,
        clock: Optional[IReactorTime] = None,
    ):
        self.config = config
        self.database = database
        self.listener = listener
        self.clock = clock or default_reactor()
        self._waiters: list[defer.Deferred[Config]] = []
        self._loading = False
        self._again = False
        self._retry: Optional[IDelayedCall] = None

    def startService(self) -> None:
        super().startService()
        self.listener.on_reconnect(self._request)
        # LISTEN before the first load, so no change can fall between them.
        listening = self.listener.listen(CONFIG_CHANGED, self._changed)
        listening.addErrback(lambda f: log.failure("cannot LISTEN on {channel}", f, channel=CONFIG_CHANGED))
        listening.addCallback(lambda _: self._request())

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._cancel_retry()
        self.listener.remove_on_reconnect(self._request)
        return self.listener.unlisten(CONFIG_CHANGED, self._changed)

    def reloaded(self) -> defer.Deferred[Config]:
        """Fires with the config after the next reload that starts after this call.

        Call it before making the change you want to see.
        """
        waiter: defer.Deferred[Config] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def _changed(self, channel: str, payload: str) -> None:
        self._request()

    def _request(self) -> None:
        """Reload now, or once more after the reload under way (it may predate the change)."""
        if not self.running:
            return
        self._cancel_retry()
        self._again = True
        if not self._loading:
            self._reload().addErrback(lambda f: log.failure("configuration reload failed", f))

    @defer.inlineCallbacks
    def _reload(self) -> Generator[defer.Deferred[Any], Any, None]:
        self._loading = True
        error: Optional[Exception] = None
        try:
            while self._again and self.running:
                self._again = False
                waiters, self._waiters = self._waiters, []
                try:
                    rows, ssl_rows = yield load_configs(self.database)
                except (DatabaseError, psycopg2.Error) as e:
                    self._waiters[:0] = waiters
                    error = e
                    break
                self.config.replace_db_rows(rows, ssl_rows)
                for waiter in waiters:
                    waiter.callback(self.config)
        finally:
            self._loading = False
        if error is not None and self.running:  # a reload cut short by stopping: no retry
            self._retry_later(error)

    def _retry_later(self, error: Exception) -> None:
        try:
            delay = self.config.get_float(RETRY_KEY)
        except ConfigError as e:
            log.warn("{error}; using {delay:g}s", error=e, delay=DEFAULT_RETRY_DELAY)
            delay = DEFAULT_RETRY_DELAY
        log.warn(
            "cannot reload configuration from {db}: {error}; retrying in {delay:g}s",
            db=self.database.where, error=first_line(error), delay=delay,
        )
        self._retry = self.clock.callLater(delay, self._request)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
