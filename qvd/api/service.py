"""``twistd qvd-api``: the administration API's start-up, in one place.

Reads node.conf and the configs tables before the reactor runs, then opens
the database pool and the LISTEN connection (for live reloads, ACL cache
flushes and ``/api/ws``) and listens on ``api.url`` (``https://*:443/`` by
default) with ``path.api.ssl.key``/``.cert``.  ``--port``/``--plain`` are
for tests and local use.  Expired sessions are swept every 10 minutes.
"""

from __future__ import annotations

import socket
from typing import Any, Generator, Optional
from urllib.parse import urlsplit

from twisted.application.service import MultiService
from twisted.internet import defer, interfaces, ssl, task
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import server

from qvd.api import console
from qvd.api.acls import CHANNEL as ACLS_CHANNEL
from qvd.api.dispatch import API
from qvd.api.web import LimitedRequest, Root
from qvd.config import Config, ConfigError
from qvd.daemon import (
    STARTUP_ERRORS, NodeDaemon, cannot_start, for_twistd, log_startup_failure, prepare,
)
from qvd.daemon import Options as DaemonOptions

log = Logger()

SWEEP_INTERVAL = 600.0


class Options(DaemonOptions):
    optParameters = [
        ["port", "p", None, "listen on this port instead of api.url's"],
    ]
    optFlags = [["plain", None, "plain HTTP instead of TLS (tests, local debugging)"]]


def listen_address(config: Config, port: Optional[str]) -> tuple[str, int, bool]:
    """(interface, port, tls) from ``api.url``."""
    url = urlsplit(config.get("api.url"))
    if url.scheme not in ("http", "https"):
        raise ConfigError(f"api.url must be http(s)://host:port/, not {config.get('api.url')!r}")
    tls = url.scheme == "https"
    host = (url.netloc.rsplit(":", 1)[0] if ":" in url.netloc else url.netloc).strip("[]")
    default_port = 443 if tls else 80
    number = int(port) if port else int(url.port or default_port)
    return ("" if host in ("*", "") else host), number, tls


def tls_context(config: Config) -> ssl.CertificateOptions:
    from OpenSSL import crypto
    try:
        with open(config.get("path.api.ssl.key"), "rb") as f:
            key = crypto.load_privatekey(crypto.FILETYPE_PEM, f.read())
        with open(config.get("path.api.ssl.cert"), "rb") as f:
            cert = crypto.load_certificate(crypto.FILETYPE_PEM, f.read())
    except (OSError, crypto.Error) as e:
        raise ConfigError(f"cannot read the API's TLS key or certificate"
                          f" (path.api.ssl.key/cert): {e}") from None
    return ssl.CertificateOptions(privateKey=key, certificate=cert,
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


class APIService(MultiService):
    """The API on its daemon's configuration, database and LISTEN connection: the web
    site, the ACL cache flushes, ``/api/ws`` and the sweep of expired sessions."""

    name = "qvd-api"

    def __init__(self, daemon: NodeDaemon, *, port: Optional[str] = None, plain: bool = False):
        super().__init__()
        self.daemon = daemon
        self.config = daemon.config
        self.reactor = daemon.reactor
        self.interface, self.port_number, tls = listen_address(self.config, port)
        self.tls = None if plain or not tls else tls_context(self.config)
        self.port: Optional[interfaces.IListeningPort] = None
        self.api: Optional[API] = None
        self._sweeper: Optional[task.LoopingCall] = None
        self.ready: defer.Deferred = defer.Deferred()

    @property
    def url(self) -> str:
        host = self.interface or socket.gethostname()
        scheme = "https" if self.tls else "http"
        port = self.port.getHost().port if self.port else self.port_number
        return f"{scheme}://{host}:{port}/"

    def startService(self) -> None:
        super().startService()
        self._boot().addCallbacks(self.ready.callback, self._fatal)

    @defer.inlineCallbacks
    def _boot(self) -> Generator[defer.Deferred[Any], Any, None]:
        config, listener = self.config, self.daemon.listener
        self.api = API(config, self.daemon.database, self.reactor)
        self.api.listener = listener
        yield listener.listen(ACLS_CHANNEL, self.api.acls.clear)
        listener.on_reconnect(self.api.acls.clear)
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor
        self._sweeper.start(SWEEP_INTERVAL, now=True)
        from qvd.api.resources import children
        site = server.Site(Root(self.api, children(self.api), console.files()))
        site.requestFactory = LimitedRequest
        LimitedRequest.limit = config.get_int("api.request.max_size")
        LimitedRequest.upload_limit = config.get_int("api.upload.max_size")
        site.displayTracebacks = False
        site.timeOut = 60
        if self.tls is not None:
            self.port = self.reactor.listenSSL(self.port_number, site, self.tls,
                                               interface=self.interface)
        else:
            self.port = self.reactor.listenTCP(self.port_number, site, interface=self.interface)
        log.info("QVD API listening on {url}", url=self.url)

    def _sweep(self) -> defer.Deferred[None]:
        def failed(failure: Any) -> None:
            log.warn("cannot sweep expired API sessions: {e}", e=failure.getErrorMessage())
        return self.api.sessions.forget_expired().addErrback(failed)

    def _fatal(self, failure: Any) -> None:
        log_startup_failure(log, "qvd-api", failure, OSError)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self.port is not None:
            yield self.port.stopListening()
        if self.api is not None:
            self.daemon.listener.remove_on_reconnect(self.api.acls.clear)
            yield self.daemon.listener.unlisten(ACLS_CHANNEL, self.api.acls.clear)
        yield super().stopService()


def makeService(options: usage.Options) -> NodeDaemon:
    """``twistd qvd-api``: a daemon holding the API (on any machine with QVD-DB access)."""
    try:
        config, host_id = prepare(options["config"], "qvd-api", host=False)
        daemon = for_twistd(NodeDaemon(config, host_id, "qvd-api"), options)
        APIService(daemon, port=options["port"], plain=bool(options["plain"])).setServiceParent(
            daemon)
    except (*STARTUP_ERRORS, ValueError) as e:
        raise cannot_start("qvd-api", e) from None
    return daemon
