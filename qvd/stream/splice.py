"""The NX splice: after ``101``, bytes go between the client and the VM untouched.

Each side writes what the other reads, and each end is the producer of the
other side's transport, so a slow reader pauses the fast writer
(backpressure both ways) instead of filling our memory.  An end of input is
passed on as a half-close where the other transport can do one (TCP) and as
a close once the last bytes are flushed where it cannot (TLS, whose close is
a ``close_notify``, never a TCP half-close under a live TLS stream).  No
per-chunk work besides the write: no logging, no counters.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet import interfaces
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.stream.once import Once
from qvd.stream.sockets import tune


@implementer(interfaces.IHalfCloseableProtocol, interfaces.IPushProducer)
class SpliceEnd(Protocol):
    """One end of a splice; until joined, what it reads waits (its transport paused).

    An end made with a ``partner`` joins it as soon as it is connected; if it
    is dropped unconnected instead, the partner is closed and ``ended`` runs.
    ``close`` replaces ``transport.loseConnection`` when this end's connection
    must be closed (the L7R's client side bounds how long a close may take).
    Once over, ``clean`` says whether the peer closed cleanly (a TLS
    ``close_notify`` or a TCP FIN) rather than losing the connection, and
    ``gone`` has happened.  ``stopped_first`` marks the end whose peer stopped
    sending (or went) before the other's: who ended the session, even when the
    other connection is the first to close completely.
    """

    def __init__(self, partner: Optional["SpliceEnd"] = None,
                 ended: Optional[Callable[["SpliceEnd"], None]] = None,
                 close: Optional[Callable[[], None]] = None) -> None:
        self.peer: Optional[SpliceEnd] = None
        self.ended = ended
        self.clean = False
        self.stopped_first = False
        self._partner = partner
        self._close = close
        self._early: list[bytes] = []
        self._done = False
        self._read_done = False
        self._write_done = False
        self.gone = Once()  # this end's connection is closed (all it was given was written)

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

    # -- IPushProducer, for the other side's transport --------------------------
    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """The other side's connection is gone: close ours (cleanly, unlike the
        raw socket beneath a TLS transport would)."""
        self.close()

    # -- ends --------------------------------------------------------------------
    def close(self) -> None:
        """Close our connection once what was written to it is flushed."""
        if self._done or self.transport is None:
            return
        if self.peer is not None:
            # We are the peer's producer no more; a TLS transport sends its
            # close_notify only once no producer is registered.
            self.transport.unregisterProducer()
        if self._close is not None:
            self._close()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """Our peer stopped sending: tell the other side (half-close if it can)."""
        self._read_done = True
        self._note_stop()
        other = self.peer
        if other is None:
            self.close()
            return
        if not can_half_close(other.transport):
            other.close()
            return
        other.transport.loseWriteConnection()
        other._write_done = True
        other._close_when_done()
        self._close_when_done()

    def writeConnectionLost(self) -> None:
        """Our own half-close went out; the other direction keeps flowing."""

    def _note_stop(self) -> None:
        other = self.peer or self._partner
        if other is None or not other.stopped_first:
            self.stopped_first = True

    def _close_when_done(self) -> None:
        """A half-closed socket stays open until both directions are over."""
        if self._read_done and self._write_done and not self._done:
            self.close()

    def connectionLost(self, reason: Failure = None) -> None:
        if self._done:
            return
        self.clean = reason is None or reason.check(ConnectionDone) is not None
        self._done = True
        self._note_stop()
        self.gone.fire()
        other = self.peer or self._partner
        if other is not None and not other._done and other.transport is not None:
            other.close()
        if self.ended is not None:
            self.ended(self)


def can_half_close(transport: interfaces.ITransport) -> bool:
    """A TCP socket can shut down its writing side; a TLS transport cannot (it would
    forward the call to the socket beneath it and cut the TLS stream)."""
    return (not isinstance(transport, TLSMemoryBIOProtocol)
            and interfaces.IHalfCloseableDescriptor.providedBy(transport))


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
        end.peer.transport.registerProducer(end, True)
    for end in (client, vm):
        early, end._early = end._early, []
        for data in early:
            end.peer.transport.write(data)
        end.transport.resumeProducing()
