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

from qvd.api.acls import CHANNEL as ACLS_CHANNEL
from qvd.api.dispatch import API
from qvd.api.web import LimitedRequest, Root
from qvd.config import Config, ConfigError
from qvd.configwatch import ConfigWatcher
from qvd.db import DatabaseError, connect_sync, queries
from qvd.db.listener import Listener
from qvd.db.pool import Database, default_reactor

log = Logger()

SWEEP_INTERVAL = 600.0


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "node.conf to read (default $QVD_CONFIG or /etc/qvd/node.conf)"],
        ["port", "p", None, "listen on this port instead of api.url's"],
    ]
    optFlags = [["plain", None, "plain HTTP instead of TLS (tests, local debugging)"]]


def load_config(path: Optional[str]) -> Config:
    config = Config.load(path)
    conn = connect_sync(config, "qvd-api")
    try:
        queries.apply_configs_now(conn, config)
    finally:
        conn.close()
    return config


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
    """The API process: database, listener, config reload, the web site."""

    name = "qvd-api"

    def __init__(self, config: Config, *, reactor: Any = None, port: Optional[str] = None,
                 plain: bool = False):
        super().__init__()
        self.config = config
        self.reactor = reactor or default_reactor()
        self.interface, self.port_number, tls = listen_address(config, port)
        self.tls = None if plain or not tls else tls_context(config)
        self.port: Optional[interfaces.IListeningPort] = None
        self.database: Optional[Database] = None
        self.listener: Optional[Listener] = None
        self.api: Optional[API] = None
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
        config = self.config
        self.database = Database(config, "qvd-api", reactor=self.reactor)
        yield self.database.start()
        self.listener = Listener(config, "qvd-api-listener", reactor=self.reactor)
        yield self.listener.start()
        watcher = ConfigWatcher(config, self.database, self.listener, clock=self.reactor)
        loaded = watcher.reloaded()
        watcher.setServiceParent(self)
        yield loaded
        self.api = API(config, self.database, self.reactor)
        self.api.listener = self.listener
        yield self.listener.listen(ACLS_CHANNEL, self.api.acls.clear)
        self.listener.on_reconnect(self.api.acls.clear)
        sweeper = task.LoopingCall(self._sweep)
        sweeper.clock = self.reactor
        sweeper.start(SWEEP_INTERVAL, now=True)
        self._sweeper = sweeper
        from qvd.api.resources import children
        site = server.Site(Root(self.api, children(self.api)))
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
        known = failure.check(ConfigError, DatabaseError, OSError)
        log.critical("qvd-api cannot start: {why}",
                     why=failure.getErrorMessage() if known else repr(failure.value))
        if not known:
            log.failure("start-up failed", failure)
        self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        if getattr(self, "_sweeper", None) is not None and self._sweeper.running:
            self._sweeper.stop()
        if self.port is not None:
            yield self.port.stopListening()
        yield super().stopService()
        if self.listener is not None:
            yield self.listener.stop()
        if self.database is not None:
            yield self.database.close()


def makeService(options: Options) -> APIService:
    try:
        config = load_config(options["config"])
        return APIService(config, port=options["port"], plain=bool(options["plain"]))
    except (ConfigError, DatabaseError, ValueError) as e:
        raise SystemExit(f"qvd-api cannot start: {e}") from None
