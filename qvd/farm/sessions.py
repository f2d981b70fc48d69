"""Real NX sessions through a farm, many in one process (tests, benches, demos).

Each ``Desktop`` is what ``qvd-client`` does, with its own code: one TLS
connection to an L7R (the balancer or a node), ``connect_to_vm``, and after
the ``101`` Debian's ``nxproxy`` on an X display, spliced to the stream.
The session is alive while that stream and nxproxy are; how it ended is
kept (``ended``), so a test or a bench can count the sessions a failure
dropped.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer

from qvd.client.l7r import L7RSession, Reply, open_session
from qvd.client.session import NXProxy, Relay, run_nxproxy
from qvd.client.settings import Settings
from qvd.http.simplerpc import SimpleRPCClient

TIMEOUT = 60.0  # seconds for the connection and the L7R's answers (twice: connect_to_vm)


class SessionFailed(Exception):
    """The L7R did not give the session; the message has its status and words."""


def settings_for(host: str, port: int, ca_file: str, login: str, password: str) -> Settings:
    """A client's settings for one user: no printing, no slave channel, a small screen."""
    return Settings(host=host, port=port, user=login, password=password, ca_file=ca_file,
                    geometry="640x480", keyboard="pc105/us", link="lan", printing=False,
                    slave=False)


@defer.inlineCallbacks
def request(reactor: Any, settings: Settings, path: str) -> Generator[Any, Any, Reply]:
    """One authenticated GET (``/qvd/list_of_vm``: a login) on a new connection."""
    l7r = yield open_session(reactor, settings, lambda text: None, TIMEOUT)
    try:
        reply = yield l7r.get(path).addTimeout(TIMEOUT, reactor)
    finally:
        l7r.close()
    return reply


class Desktop:
    """One user's NX session on one VM; ``connect()`` fires once nxproxy is attached."""

    def __init__(self, reactor: Any, settings: Settings, vm_id: int, display: str, home: str):
        self.reactor = reactor
        self.settings = settings
        self.vm_id = vm_id
        self.env = {"DISPLAY": display, "HOME": home}  # nxproxy keeps its files in ~/.nx
        self.progress: list[str] = []
        self.ended: Optional[str] = None  # "server" or "local" once the stream ended
        self.relay: Optional[Relay] = None
        self.nxproxy: Optional[NXProxy] = None
        self._l7r: Optional[L7RSession] = None

    @defer.inlineCallbacks
    def connect(self) -> Generator[Any, Any, None]:
        l7r = self._l7r = yield open_session(self.reactor, self.settings, self.progress.append,
                                             TIMEOUT)
        reply = yield l7r.connect_to_vm(self.vm_id).addTimeout(2 * TIMEOUT, self.reactor)
        if reply.status != 101:
            l7r.close()
            raise SessionFailed(f"connect_to_vm {self.vm_id}: {reply.status} {reply.text}")
        relay = self.relay = Relay(l7r.protocol)
        relay.ended.addCallback(self._ended)

        def started(nxproxy: NXProxy) -> None:
            self.nxproxy = nxproxy

        yield run_nxproxy(self.reactor, relay, self.settings, started, [], self.env)

    def _ended(self, side: str) -> str:
        self.ended = side
        return side

    @property
    def alive(self) -> bool:
        """The stream is open and nxproxy runs."""
        return (self.relay is not None and self.ended is None and self.nxproxy is not None
                and self.nxproxy.running)

    def when_ended(self) -> defer.Deferred[str]:
        """Fires with the side that closed the stream first."""
        assert self.relay is not None
        d: defer.Deferred[str] = defer.Deferred()
        self.relay.ended.addBoth(lambda side: (d.callback(side), side)[1])
        return d

    @defer.inlineCallbacks
    def close(self) -> Generator[Any, Any, None]:
        """Hang up (the VM keeps the session suspended) and stop nxproxy."""
        if self.relay is not None:
            self.relay.close()
        elif self._l7r is not None:
            self._l7r.close()
        if self.nxproxy is not None:
            yield self.nxproxy.stop(self.reactor)


def x_state(reactor: Any, address: str, port: int) -> defer.Deferred[Any]:
    """The VMA's ``x_state`` (``connected`` while a client is attached)."""
    return SimpleRPCClient(reactor, address, port, 5).call("x_state")
