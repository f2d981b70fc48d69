"""The start-up the node's daemons share: ``twistd qvd-l7r``, ``qvd-hkd`` and ``qvd-node``.

Before the reactor runs, ``prepare`` reads node.conf and the ``configs`` tables,
checks the schema and finds this node's host row, on a blocking connection, so
that a node that cannot run stops ``twistd`` with one clear line.  Then one
``NodeDaemon`` holds what its services share (as Buildbot's master gives its
whole service tree one db connector): the configuration, one QVD-DB pool, one
LISTEN connection and the watcher that reloads the configuration.  It starts its
services once those are up, stops them one after the other, last first (in
``qvd-node``: the L7R's sessions are released before the HKD stops the VMs), and
closes the database after them.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.failure import Failure

from qvd import logs
from qvd.config import Config, ConfigError
from qvd.configwatch import ConfigWatcher
from qvd.db import SCHEMA_VERSION, SCHEMA_VERSIONS, DatabaseError, connect_sync
from qvd.db.configs import apply_configs_now
from qvd.db.hosts import HOST_ID
from qvd.db.listener import Listener
from qvd.db.pool import Database
from qvd.reactor import default_reactor
from qvd.stream.once import Once

log = Logger()


class StartError(Exception):
    """The daemon cannot run on this database or configuration; the message says why."""


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "node.conf to read (default $QVD_CONFIG or /etc/qvd/node.conf)"],
    ]


KINDS = {"qvd-hkd": "HKD", "qvd-l7r": "L7R", "qvd-node": "node", "qvd-api": "API"}


def prepare(config_path: Optional[str], name: str,
            host: bool = True) -> tuple[Config, Optional[int]]:
    """node.conf with the ``configs`` tables laid over it, and this node's ``hosts.id``
    (None when ``host`` is false: the API may run on a machine that is not a node).

    Blocking, so only before the reactor runs; fails with ``ConfigError``,
    ``DatabaseError`` or ``StartError``.
    """
    config = Config.load(config_path)
    nodename = config.get("nodename")
    conn = connect_sync(config, name)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA_VERSIONS)
            found = [row[0] for row in cur.fetchall()]
            if found != [SCHEMA_VERSION]:
                raise StartError(f"QVD-DB schema version is {', '.join(found) or 'none'},"
                                 f" this {KINDS.get(name, name)} needs {SCHEMA_VERSION}")
            cur.execute(HOST_ID, (nodename,))
            rows = cur.fetchall()
        apply_configs_now(conn, config)
    finally:
        conn.close()
    if not host:
        return config, None
    if not rows:
        raise StartError(f"no host named {nodename!r} (nodename) in QVD-DB:"
                         f" create it with 'qa host new name={nodename},address=<its IP>'")
    return config, rows[0][0]


def for_twistd(daemon: "NodeDaemon", options: usage.Options) -> "NodeDaemon":
    """``daemon`` logging where its ``log.*`` keys and twistd's options say (``qvd.logs``);
    fails with ``ConfigError``."""
    daemon.log_observer = logs.observer(daemon.config, logs.twistd_options(options))
    return daemon


def cannot_start(name: str, error: Exception) -> SystemExit:
    """What ``makeService`` raises for a known start-up failure: one line, no traceback."""
    return SystemExit(f"{name} cannot start: {error}")


STARTUP_ERRORS = (ConfigError, DatabaseError, StartError)


def log_startup_failure(logger: Logger, name: str, failure: Failure, *known: type) -> None:
    """Why ``name`` cannot start, on one critical line; a traceback only for an error that
    is neither a STARTUP_ERRORS one nor ``known`` (those explain themselves)."""
    expected = failure.check(*STARTUP_ERRORS, *known)
    logger.critical("{name} cannot start: {why}", name=name,
                    why=failure.getErrorMessage() if expected else repr(failure.value))
    if not expected:
        logger.failure("start-up failed", failure)


class NodeDaemon(MultiService):
    """One daemon process of a node: the shared resources, then its services."""

    def __init__(self, config: Config, host_id: Optional[int], name: str, reactor: Any = None):
        super().__init__()
        self.setName(name)
        self.config = config
        self.host_id = host_id
        self.reactor = reactor or default_reactor()
        self.database: Optional[Database] = None
        self.listener: Optional[Listener] = None
        self._watcher: Optional[ConfigWatcher] = None
        self._opened = False
        self._started = Once()
        self.log_observer: Optional[ILogObserver] = None  # what twistd logs to (qvd.logs)

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        logs.offer(parent, self.log_observer)

    def started(self) -> defer.Deferred[None]:
        """Fires once the shared resources are up and the services started (or fails with
        why the daemon could not start); a new Deferred for every caller."""
        return self._started.wait()

    def startService(self) -> None:
        Service.startService(self)
        self._open().addCallbacks(self._start_services, self._failed)

    @defer.inlineCallbacks
    def _open(self) -> Generator[defer.Deferred[Any], Any, None]:
        self.database = Database(self.config, self.name, reactor=self.reactor)
        yield self.database.start()
        self.listener = Listener(self.config, f"{self.name}-listener", reactor=self.reactor)
        yield self.listener.start()
        self._watcher = ConfigWatcher(self.config, self.database, self.listener,
                                      clock=self.reactor)
        loaded = self._watcher.reloaded()
        self._watcher.startService()
        yield loaded

    def _start_services(self, _: None) -> None:
        self._opened = True
        for service in self:
            service.startService()
        self._started.fire()

    def _failed(self, failure: Failure) -> None:
        log_startup_failure(log, self.name, failure)
        self._started.fire(failure)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Services one after the other, last first; then what they shared."""
        Service.stopService(self)
        if self._opened:
            for service in reversed(list(self)):
                if service.running:
                    yield service.stopService()
        if self._watcher is not None and self._watcher.running:
            yield self._watcher.stopService()
        if self.listener is not None:
            yield self.listener.stop()
        if self.database is not None:
            yield self.database.close()
