"""The admin listener: ``GET /metrics`` in Prometheus' text format, apart from the clients.

Each daemon has its own (``l7r.metrics.port``, ``hkd.metrics.port``), off
while the port is 0, on ``<prefix>.metrics.address`` (loopback by default)
when set, so a scrape never competes with clients on the L7R's TLS port and
the numbers are not shown to the world unless an administrator says so.
The page is built on the reactor thread (the collectors read live state that
only that thread may touch); it is small, and scrapes are seconds apart.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.service import Service
from twisted.internet import interfaces
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from qvd.config import Config, ConfigError
from qvd.metrics.snapshot import Snapshot, render

log = Logger()


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, source: Callable[[], Snapshot]):
        super().__init__()
        self.source = source

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([b"metrics"], [b"metrics", b""]):
            request.setResponseCode(404)
            return b"only /metrics here\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return render(self.source())


class QuietSite(Site):
    """No access log and no factory start/stop lines: scrapes come every few seconds."""

    noisy = False

    def log(self, request: Request) -> None:
        pass


class MetricsService(Service):
    """Serves ``source()`` on ``address:port`` while running."""

    def __init__(self, reactor: Any, address: str, port: int, source: Callable[[], Snapshot],
                 what: str):
        self.reactor = reactor
        self.address = address
        self.port_number = port
        self.source = source
        self.what = what
        self.port: Optional[interfaces.IListeningPort] = None

    def startService(self) -> None:
        super().startService()
        try:
            self.port = self.reactor.listenTCP(
                self.port_number, QuietSite(MetricsPage(self.source)), interface=self.address)
        except CannotListenError as e:
            raise ConfigError(f"cannot serve {self.what} metrics on {self.address}:"
                              f"{self.port_number} ({self.what.lower()}.metrics.port):"
                              f" {e.socketError}") from None
        log.info("{what} metrics on http://{address}:{port}/metrics", what=self.what,
                 address=self.address, port=self.port.getHost().port)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None


def listen_address(config: Config, prefix: str) -> Optional[tuple[str, int]]:
    """(address, port) of ``<prefix>.metrics.*``; None while the port is 0."""
    port = config.get_int(f"{prefix}.metrics.port")
    if port == 0:
        return None
    address = config.get(f"{prefix}.metrics.address").strip() or "127.0.0.1"
    return ("0.0.0.0" if address == "*" else address), port


def metrics_service(config: Config, prefix: str, reactor: Any,
                    source: Callable[[], Snapshot]) -> Optional[MetricsService]:
    """The listener ``<prefix>.metrics.*`` asks for; None while its port is 0."""
    where = listen_address(config, prefix)
    if where is None:
        return None
    return MetricsService(reactor, where[0], where[1], source, prefix.upper())


def announce(config: Config) -> str:
    """Where a node's metrics are (for ``./run-node``): a line per daemon that serves them."""
    lines = []
    for prefix in ("l7r", "hkd"):
        where = listen_address(config, prefix)
        if where is not None:
            host = "localhost" if where[0] in ("0.0.0.0", "127.0.0.1") else where[0]
            lines.append(f"{prefix.upper()} metrics: http://{host}:{where[1]}/metrics")
    return "\n".join(lines) or ("metrics: off (set l7r.metrics.port and hkd.metrics.port"
                                " in node.conf to serve them)")
