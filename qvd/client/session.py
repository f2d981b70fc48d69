"""After ``101``: the NX stream between the L7R and a local end (reference §5).

The L7R end is held (its transport paused, early bytes kept) until the
local end joins it, then bytes are spliced both ways with backpressure and
half-closes, by the same code as the L7R's own splice.  Local ends:

* ``nxproxy -S localhost:<port - 4000>`` connecting to a loopback port we
  listen on (the Qt client's way), showing the desktop on ``$DISPLAY``;
* one connection accepted on a given local port (``--listen``);
* standard input and output (``--pipe``).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any, Callable, Generator, Optional

from twisted.internet import defer, error, protocol, stdio
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.client.l7r import L7RProtocol
from qvd.client.settings import Settings
from qvd.hkd.once import Once
from qvd.lines import LineSplitter
from qvd.l7r.splice import SpliceEnd

log = Logger()

SERVER, LOCAL = "server", "local"
NXPROXY_ACCEPT_TIMEOUT = 20.0
NXPROXY_STOP_TIMEOUT = 5.0
# what nxproxy says when the stream ends without nxagent closing the session
BROKEN = "Connection with remote peer broken"
# ... and when the local X server refused the desktop's X connections
REFUSED = "Your session was closed before reaching a usable state"
SLAVE_PORTS = range(62000, 64000)


class Relay:
    """The NX stream of one session; ``ended`` fires with the side that closed first."""

    def __init__(self, connection: L7RProtocol):
        self.ended: defer.Deferred[str] = defer.Deferred()
        self.remote = SpliceEnd(ended=self._ended)
        connection.switch(self.remote)

    def local_end(self) -> SpliceEnd:
        """A protocol for the local side: it joins the L7R end once connected."""
        return SpliceEnd(self.remote, self._ended)

    def _ended(self, end: SpliceEnd) -> None:
        if not self.ended.called:
            self.ended.callback(SERVER if end is self.remote else LOCAL)

    def close(self) -> None:
        if self.remote.transport is not None:
            self.remote.transport.loseConnection()


class _OneConnection(protocol.Factory):
    """Accepts the first connection into the relay, refuses any other."""

    noisy = False

    def __init__(self, relay: Relay):
        self.relay = relay
        self.accepted: defer.Deferred[None] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> Optional[protocol.Protocol]:
        if self.accepted.called:
            return None
        self.accepted.callback(None)
        return self.relay.local_end()


@defer.inlineCallbacks
def serve(reactor: Any, relay: Relay, port: int,
          on_listening: Callable[[int], None]) -> Generator[Any, Any, None]:
    """Listen on 127.0.0.1:``port`` (0: any free one) until one connection is accepted
    (or the server ends the stream first)."""
    factory = _OneConnection(relay)
    listening = yield TCP4ServerEndpoint(reactor, port, backlog=1,
                                         interface="127.0.0.1").listen(factory)
    on_listening(listening.getHost().port)
    try:
        yield defer.DeferredList([factory.accepted, relay.ended], fireOnOneCallback=True)
    finally:
        yield listening.stopListening()


def pipe(relay: Relay) -> None:
    """The stream on standard input and output."""
    stdio.StandardIO(relay.local_end())


@defer.inlineCallbacks
def listen_above_4000(reactor: Any, factory: protocol.Factory) -> Generator[Any, Any, Any]:
    """A listening loopback port above 4000 (nxproxy is told ``port - 4000``)."""
    for _ in range(50):
        listening = yield TCP4ServerEndpoint(reactor, 0, backlog=1,
                                             interface="127.0.0.1").listen(factory)
        if listening.getHost().port > 4000:
            return listening
        yield listening.stopListening()
    raise OSError("no free loopback port above 4000")


def slave_port() -> Optional[int]:
    """A free loopback port for nxproxy's slave channel, as QVD's clients pick it."""
    for number in SLAVE_PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", number))
            except OSError:
                continue
            return number
    return None


class NXProxy(protocol.ProcessProtocol):
    """Debian's nxproxy in X-server mode; its output is kept (last lines) and logged."""

    def __init__(self, echo: bool):
        self.echo = echo
        self.tail: deque[str] = deque(maxlen=30)
        self.code: Optional[int] = None
        self._exit = Once()
        self._lines = LineSplitter()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        for raw in self._lines.feed(data):
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            if self.echo:
                log.info("nxproxy: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        code = reason.value.exitCode if reason.check(error.ProcessTerminated) else 0
        self.code = code if code is not None else -1
        self._exit.fire()

    @property
    def running(self) -> bool:
        return not self._exit.happened

    def exited(self) -> defer.Deferred[None]:
        """A new Deferred for every caller, fired once nxproxy has exited."""
        return self._exit.wait()

    @property
    def link_broken(self) -> bool:
        """True if the link to nxagent was cut, not closed by a session end."""
        return any(BROKEN in line for line in self.tail)

    @property
    def display_refused(self) -> bool:
        return any(REFUSED in line for line in self.tail)

    def stop(self, reactor: Any, grace: float = 0.0) -> defer.Deferred[None]:
        """After ``grace`` seconds (time to exit by itself) TERM, then KILL if it lingers."""
        if self.running:
            timers = [reactor.callLater(grace, self._signal, "TERM"),
                      reactor.callLater(grace + NXPROXY_STOP_TIMEOUT, self._signal, "KILL")]
            self.exited().addCallback(lambda _: [t.cancel() for t in timers if t.active()])
        return self.exited()

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def nxproxy_argv(settings: Settings, port: int, slave: Optional[int]) -> list[str]:
    """``nxproxy [extra args] -S [cups=631] [slave=P] localhost:<port - 4000>``."""
    options = []
    if settings.printing:
        options.append("cups=631")
    if slave is not None:
        options.append(f"slave={slave}")
    return ([settings.nxproxy] + settings.nxproxy_args + ["-S"] + options
            + [f"localhost:{port - 4000}"])


def first_of(reactor: Any, timeout: float, *waited: defer.Deferred[Any]) -> defer.Deferred[None]:
    """Fires once any of ``waited`` has, or after ``timeout`` s; cancels and consumes none."""
    done: defer.Deferred[None] = defer.Deferred()

    def fire(result: Any = None) -> Any:
        if not done.called:
            done.callback(None)
        return result

    for d in waited:
        d.addBoth(fire)
    timer = reactor.callLater(timeout, fire)
    done.addCallback(lambda _: timer.cancel() if timer.active() else None)
    return done


@defer.inlineCallbacks
def run_nxproxy(reactor: Any, relay: Relay, settings: Settings,
                started: Callable[[NXProxy], None],
                extra_env: Optional[dict[str, str]] = None) -> Generator[Any, Any, None]:
    """Spawn nxproxy (our environment and ``extra_env``: another DISPLAY, HOME) and splice
    its connection into ``relay``; fails if it never comes."""
    factory = _OneConnection(relay)
    listening = yield listen_above_4000(reactor, factory)
    port = listening.getHost().port
    env = {**os.environ, "NX_CLIENT": "/bin/true", **(extra_env or {})}  # NX_CLIENT: no dialogs
    if settings.slave_command:
        env["NX_SLAVE_CMD"] = env["QVD_SLAVE_CMD"] = settings.slave_command
    nxproxy = NXProxy(settings.verbose)
    argv = nxproxy_argv(settings, port, slave_port() if settings.slave else None)
    log.debug("running {argv}", argv=" ".join(argv))
    try:
        reactor.spawnProcess(nxproxy, argv[0], argv, env=env)
    except OSError:
        yield listening.stopListening()
        raise
    started(nxproxy)
    try:
        yield first_of(reactor, NXPROXY_ACCEPT_TIMEOUT,
                       factory.accepted, nxproxy.exited(), relay.ended)
    finally:
        yield listening.stopListening()
    if not factory.accepted.called and not relay.ended.called:
        raise NXProxyFailed(nxproxy)


class NXProxyFailed(Exception):
    """nxproxy exited, or never connected, before the session started."""

    def __init__(self, nxproxy: NXProxy):
        self.nxproxy = nxproxy
        super().__init__("nxproxy exited before connecting" if not nxproxy.running else
                         f"nxproxy did not connect within {NXPROXY_ACCEPT_TIMEOUT:g} s")
