"""``twistd qvd-l7r``: the client-facing broker, a service of a ``NodeDaemon``.

Start-up reads the configuration and the TLS material before the reactor
runs, so a bad key or certificate stops ``twistd`` with one clear line.
The listening socket is opened with SO_REUSEPORT: with ``l7r.processes`` > 1
the first process starts that many minus one worker processes, each a full
L7R on the same port (the kernel spreads the connections), and restarts a
worker that dies.  Its connections get the transports of
``qvd.stream.transport`` (TLS on the socket itself, writes sent at once).
A graceful reload replaces the processes without dropping a session
(``qvd.l7r.reload``); ``drain`` is a process's part of it.
"""

from __future__ import annotations

import signal
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Generator, Optional

from twisted.application.service import MultiService
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python import usage

from qvd.audit import AuditQueue
from qvd.daemon import (
    STARTUP_ERRORS, NodeDaemon, cannot_start, for_twistd, log_startup_failure, prepare,
)
from qvd.daemon import Options as DaemonOptions
from qvd.http.head import Limits
from qvd.http.server import QVDHTTPServerFactory, QVDHTTPServerProtocol, Timeouts
from qvd.l7r.auth import Authenticator
from qvd.l7r.handler import L7RContext, L7RHandler
from qvd.l7r.sessions import SessionRegistry
from qvd.l7r.tls import TLSConfigError, server_context
from qvd.l7r.trail import Trail
from qvd.l7r.reload import Generations, ReloadControl
from qvd.l7r.workers import LISTENING, ParentPipe
from qvd.metrics.database import DatabaseCollector
from qvd.metrics.l7r import L7RMetrics, first_process_metrics
from qvd.metrics.relay import ReportSender, WorkerReports
from qvd.metrics.server import metrics_service
from qvd.stream.transport import StreamPort

log = Logger()


class Options(DaemonOptions):
    optFlags = [
        ["worker", None, "run as an extra worker of another qvd-l7r (started by it)"],
    ]


def listen(reactor: Any, address: str, port: int, factory: Factory,
           tls: Optional[ssl.SSLContext] = None) -> interfaces.IListeningPort:
    """A listening TCP port shared with our sibling processes (SO_REUSEPORT), TLS
    when ``tls`` is given; an ``OSError`` if the address cannot be had."""
    host = "0.0.0.0" if address.strip() in ("*", "") else address.strip()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    listening = StreamPort(sock, factory, reactor, tls)
    listening.startListening()
    return listening


class Connections:
    """The open client connections of one L7R process, so that a draining process
    knows when its last one has ended."""

    def __init__(self) -> None:
        self.open: set[QVDHTTPServerProtocol] = set()
        self._waiters: list[defer.Deferred[None]] = []

    def add(self, protocol: QVDHTTPServerProtocol) -> None:
        self.open.add(protocol)
        protocol.channel.lost.addBoth(self._lost, protocol)

    def _lost(self, result: Any, protocol: QVDHTTPServerProtocol) -> Any:
        self.open.discard(protocol)
        if not self.open:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def ended(self) -> defer.Deferred[None]:
        """Fires once no connection is open (at once if none is)."""
        if not self.open:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter


@dataclass(repr=False)
class L7RFactory(QVDHTTPServerFactory):
    connections: Connections = field(default_factory=Connections)

    def buildProtocol(self, addr: Any) -> QVDHTTPServerProtocol:
        protocol = super().buildProtocol(addr)
        self.connections.add(protocol)
        return protocol


class L7RService(MultiService):
    """One L7R process's broker: sessions, authentication and the listening port, on
    its daemon's configuration, database and LISTEN connection."""

    name = "qvd-l7r"

    def __init__(self, daemon: NodeDaemon, *, tls: Optional[ssl.SSLContext] = None,
                 worker: bool = False):
        super().__init__()
        self.daemon = daemon
        self.tls = tls
        self.worker = worker
        self.port: Optional[interfaces.IListeningPort] = None
        self.sessions: Optional[SessionRegistry] = None
        self.authenticator: Optional[Authenticator] = None
        self.metrics = L7RMetrics()
        self.audit: Optional[AuditQueue] = None
        self.connections = Connections()
        self.generations: Optional[Generations] = None  # the first process's workers
        self.ready: defer.Deferred = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        self._boot().addCallbacks(self.ready.callback, self._fatal)

    @defer.inlineCallbacks
    def _boot(self) -> Generator[defer.Deferred[Any], Any, None]:
        daemon, config, reactor = self.daemon, self.daemon.config, self.daemon.reactor
        self.audit = AuditQueue(daemon.database, reactor)
        self.audit.startService()
        self.metrics.registry.register(DatabaseCollector(daemon.database, daemon.listener))
        trail = Trail(self.metrics, self.audit, reactor)
        sessions = SessionRegistry(config, daemon.database, daemon.listener, daemon.host_id,
                                   reactor)
        sessions.setServiceParent(self)
        yield sessions.started
        self.sessions = sessions
        self.authenticator = Authenticator(config, daemon.database, daemon.host_id, clock=reactor,
                                           trail=trail)
        context = L7RContext(config, daemon.database, self.authenticator, sessions,
                             config.get("nodename"), reactor, trail)
        factory = L7RFactory(L7RHandler(context), reactor, Limits(),
                             Timeouts(head=config.get_float("l7r.timeout.head"),
                                      idle=config.get_float("l7r.timeout.idle"),
                                      first=config.get_float("l7r.timeout.first"),
                                      close=config.get_float("l7r.timeout.close")),
                             self.connections)
        self.port = listen(reactor, config.get("l7r.address"), config.get_int("l7r.port"),
                           factory, self.tls)
        log.info("L7R listening on {address}:{port} ({tls})", address=config.get("l7r.address"),
                 port=self.port.getHost().port, tls="TLS" if self.tls else "plain HTTP",
                 **{LISTENING: True})
        reports = WorkerReports()
        if self.worker:
            reactor.addReader(ParentPipe(reactor.stop, self._drain_and_exit))
            if config.get_int("l7r.metrics.port"):
                ReportSender(self.metrics.registry, reactor).setServiceParent(self)
        else:
            self.generations = Generations(self, reports)
            self.generations.setServiceParent(self)
        server = None if self.worker else metrics_service(
            config, "l7r", reactor, lambda: first_process_metrics(self.metrics, reports))
        if server is not None:
            server.setServiceParent(self)

    @property
    def accepting(self) -> bool:
        return self.port is not None

    def reload(self) -> defer.Deferred[None]:
        """New L7R processes take the port, this one and its workers drain."""
        if self.generations is None:
            log.warn("L7R reload ignored: the L7R is not serving yet")
            return defer.succeed(None)
        return self.generations.reload()

    @defer.inlineCallbacks
    def drain(self, timeout: float) -> Generator[defer.Deferred[Any], Any, None]:
        """Stop accepting, serve the open connections to their end for at most
        ``timeout`` seconds, then cut what is left (rows reset) and close it."""
        port, self.port = self.port, None
        if port is None:
            return
        port.take_backlog()
        yield port.stopListening()
        log.info("L7R draining: no longer accepting; {connections} connections open,"
                 " {sessions} of them sessions (at most {timeout} s)",
                 connections=len(self.connections.open), sessions=len(self.sessions or ()),
                 timeout=timeout)
        try:
            yield self.connections.ended().addTimeout(timeout, self.daemon.reactor)
        except defer.TimeoutError:
            log.warn("L7R drain timeout: cutting its {sessions} sessions and"
                     " {connections} connections", sessions=len(self.sessions or ()),
                     connections=len(self.connections.open))
            if self.sessions is not None:
                yield self.sessions.cut_all()
            for protocol in list(self.connections.open):
                protocol.transport.abortConnection()
        log.info("L7R drained")

    def _drain_and_exit(self) -> None:
        """A worker's part of a reload: drain, then stop like on SIGTERM."""
        self.drain(self.daemon.config.get_float("l7r.reload.drain_timeout")).addBoth(
            lambda _: self.daemon.reactor.stop())

    def _fatal(self, failure: Any) -> None:
        log_startup_failure(log, "qvd-l7r", failure, TLSConfigError, OSError)
        self.ready.errback(failure)
        if self.daemon.reactor.running:
            self.daemon.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        if self.port is not None:
            yield self.port.stopListening()
        yield super().stopService()
        if self.authenticator is not None:
            self.authenticator.close()
        if self.audit is not None:  # last: the rows of the sessions just cut
            yield self.audit.stopService()


def makeService(options: usage.Options) -> NodeDaemon:
    """``twistd qvd-l7r``: a daemon holding one L7R (worker processes hold one each)."""
    try:
        config, host_id = prepare(options["config"], "qvd-l7r")
        tls = server_context(config) if config.get_bool("l7r.use_ssl") else None
        daemon = for_twistd(NodeDaemon(config, host_id, "qvd-l7r"), options)
    except (*STARTUP_ERRORS, TLSConfigError) as e:
        raise cannot_start("qvd-l7r", e) from None
    l7r = L7RService(daemon, tls=tls, worker=bool(options["worker"]))
    l7r.setServiceParent(daemon)
    if options["worker"]:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the first process's
    else:
        ReloadControl(l7r.reload, config, daemon.reactor).setServiceParent(daemon)
    return daemon
