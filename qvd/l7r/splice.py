"""The NX splice: after ``101``, bytes go between the client and the VM untouched.

Each side writes what the other reads, and each side's transport is the
producer of the other's consumer, so a slow reader pauses the fast writer
(backpressure both ways) instead of filling our memory.  An end of input is
passed on as a half-close where the other transport can do one (TCP) and as
a close once the last bytes are flushed where it cannot (TLS).  No per-chunk
work besides the write: no logging, no counters.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.http.sockets import tune


@implementer(interfaces.IHalfCloseableProtocol)
class SpliceEnd(Protocol):
    """One end of a splice; until joined, what it reads waits (its transport paused).

    An end made with a ``partner`` joins it as soon as it is connected; if it
    is dropped unconnected instead, the partner is closed and ``ended`` runs.
    """

    def __init__(self, partner: Optional["SpliceEnd"] = None,
                 ended: Optional[Callable[["SpliceEnd"], None]] = None) -> None:
        self.peer: Optional[SpliceEnd] = None
        self.ended = ended
        self._partner = partner
        self._early: list[bytes] = []
        self._done = False
        self._read_done = False
        self._write_done = False

    def connectionMade(self) -> None:
        tune(self.transport)
        if self._partner is not None:
            join(self, self._partner, self.ended)
        else:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(data)
        else:
            self.peer.transport.write(data)

    def readConnectionLost(self) -> None:
        """Our peer stopped sending: tell the other side (half-close if it can)."""
        self._read_done = True
        other = self.peer
        if other is None:
            self.transport.loseConnection()
            return
        half_close = getattr(other.transport, "loseWriteConnection", None)
        if half_close is None:
            other.transport.loseConnection()
        else:
            half_close()
            other._write_done = True
            other._close_when_done()
        self._close_when_done()

    def writeConnectionLost(self) -> None:
        """Our own half-close went out; the other direction keeps flowing."""

    def _close_when_done(self) -> None:
        """A half-closed socket stays open until both directions are over."""
        if self._read_done and self._write_done and not self._done:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        if self._done:
            return
        self._done = True
        other = self.peer or self._partner
        if other is not None and not other._done and other.transport is not None:
            other.transport.loseConnection()
        if self.ended is not None:
            self.ended(self)


def join(client: SpliceEnd, vm: SpliceEnd, ended: Callable[[SpliceEnd], None]) -> None:
    """Connect two ends; ``ended`` is called once, when the first end closes."""
    client.peer, vm.peer = vm, client
    fired: list[bool] = []

    def once(end: SpliceEnd) -> None:
        if not fired:
            fired.append(True)
            ended(end)

    client.ended = vm.ended = once
    for end in (client, vm):
        end.peer.transport.registerProducer(end.transport, True)
    for end in (client, vm):
        early, end._early = end._early, []
        for data in early:
            end.peer.transport.write(data)
        end.transport.resumeProducing()
