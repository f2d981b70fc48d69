"""``twistd qvd-l7r``: the client-facing broker as a service tree.

Start-up reads the configuration and the TLS material before the reactor
runs, so a bad key or certificate stops ``twistd`` with one clear line.
The listening socket is opened with SO_REUSEPORT: with ``l7r.processes`` > 1
the first process starts that many minus one worker processes, each a full
L7R on the same port (the kernel spreads the connections), and restarts a
worker that dies.
"""

from __future__ import annotations

import socket
from typing import Any, Generator, Optional

from twisted.application.service import MultiService
from twisted.internet import defer, interfaces
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from qvd.config import Config, ConfigError
from qvd.configwatch import ConfigWatcher
from qvd.db import DatabaseError, connect_sync
from qvd.db import queries
from qvd.db.listener import Listener
from qvd.db.pool import Database, default_reactor
from qvd.http.head import Limits
from qvd.http.server import QVDHTTPServerFactory, Timeouts
from qvd.l7r.auth import Authenticator
from qvd.l7r.handler import L7RContext, L7RHandler
from qvd.l7r.sessions import SessionRegistry
from qvd.l7r.tls import L7RContextFactory, TLSConfigError
from qvd.l7r.workers import ParentPipe, WorkerPool

log = Logger()


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "node.conf to read (default $QVD_CONFIG or /etc/qvd/node.conf)"],
    ]
    optFlags = [
        ["worker", None, "run as an extra worker of another qvd-l7r (started by it)"],
    ]


def load_config(path: Optional[str]) -> Config:
    """node.conf plus the configs and ssl_configs tables, read now (blocking, at start)."""
    config = Config.load(path)
    conn = connect_sync(config, "qvd-l7r")
    try:
        queries.apply_configs_now(conn, config)
    finally:
        conn.close()
    return config


def listen(reactor: Any, address: str, port: int, factory: Any) -> interfaces.IListeningPort:
    """A listening TCP port shared with our sibling processes (SO_REUSEPORT)."""
    host = "0.0.0.0" if address.strip() in ("*", "") else address.strip()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()


class L7RService(MultiService):
    """One L7R process: database, config reload, sessions and the listening port."""

    name = "qvd-l7r"

    def __init__(self, config: Config, *, reactor: Any = None,
                 tls: Optional[L7RContextFactory] = None, worker: bool = False):
        super().__init__()
        self.config = config
        self.reactor = reactor or default_reactor()
        self.tls = tls
        self.worker = worker
        self.port: Optional[interfaces.IListeningPort] = None
        self.database: Optional[Database] = None
        self.listener: Optional[Listener] = None
        self.sessions: Optional[SessionRegistry] = None
        self.authenticator: Optional[Authenticator] = None
        self.ready: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        d = self._boot()
        d.addCallbacks(self.ready.callback, self._fatal)

    @defer.inlineCallbacks
    def _boot(self) -> Generator[defer.Deferred[Any], Any, None]:
        config = self.config
        database = Database(config, "qvd-l7r", reactor=self.reactor)
        yield database.start()
        self.database = database
        listener = Listener(config, "qvd-l7r-listener", reactor=self.reactor)
        yield listener.start()
        self.listener = listener
        watcher = ConfigWatcher(config, database, listener, clock=self.reactor)
        loaded = watcher.reloaded()
        watcher.setServiceParent(self)
        yield loaded
        nodename = config.get("nodename")
        rows = yield queries.node_status(database, nodename)
        if not rows:
            raise ConfigError(f"no host named {nodename!r} (nodename) in QVD-DB: create it with"
                              f" 'qa host new name={nodename},address=<its IP>'")
        host_id = rows[0][0]
        sessions = SessionRegistry(config, database, listener, host_id, self.reactor)
        sessions.setServiceParent(self)
        yield sessions.started
        self.sessions = sessions
        self.authenticator = Authenticator(config, database, host_id, clock=self.reactor)
        context = L7RContext(config, database, self.authenticator, sessions, nodename,
                             self.reactor, self.reactor)
        factory: Any = QVDHTTPServerFactory(L7RHandler(context), self.reactor, Limits(),
                                            Timeouts(head=config.get_float("l7r.timeout.head"),
                                                     idle=config.get_float("l7r.timeout.idle"),
                                                     first=config.get_float("l7r.timeout.first"),
                                                     close=config.get_float("l7r.timeout.close")))
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        self.port = listen(self.reactor, config.get("l7r.address"), config.get_int("l7r.port"),
                           factory)
        log.info("L7R listening on {address}:{port} ({tls})", address=config.get("l7r.address"),
                 port=self.port.getHost().port, tls="TLS" if self.tls else "plain HTTP")
        processes = config.get_int("l7r.processes")
        if self.worker:
            self.reactor.addReader(ParentPipe(self.reactor.stop))
        elif processes > 1:
            WorkerPool(self.reactor, processes - 1, config.path).setServiceParent(self)

    def _fatal(self, failure: Any) -> None:
        known = failure.check(ConfigError, DatabaseError, TLSConfigError, OSError)
        log.critical("qvd-l7r cannot start: {why}",
                     why=failure.getErrorMessage() if known else repr(failure.value))
        if not known:
            log.failure("start-up failed", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        if self.port is not None:
            yield self.port.stopListening()
        yield super().stopService()
        if self.listener is not None:
            yield self.listener.stop()
        if self.database is not None:
            yield self.database.close()
        if self.authenticator is not None:
            self.authenticator.close()


def makeService(options: Options) -> L7RService:
    try:
        config = load_config(options["config"])
        tls = L7RContextFactory(config) if config.get_bool("l7r.use_ssl") else None
    except (ConfigError, DatabaseError, TLSConfigError) as e:
        raise SystemExit(f"qvd-l7r cannot start: {e}") from None  # one line, no traceback
    return L7RService(config, tls=tls, worker=bool(options["worker"]))
