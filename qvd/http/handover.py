"""The raw stream after ``101 Switching Protocols``, for either end of the dialect.

Once ``hand_over`` has run, every byte and every end-of-stream event belongs
to the new protocol; before it, a peer that stops sending is hung up on.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import interfaces
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from qvd.http.head import HeadParser


@implementer(interfaces.IHalfCloseableProtocol)
class HandoverProtocol(Protocol):
    """Base of the server and client protocols: the 101 handover and half-closes."""

    _raw: Optional[interfaces.IProtocol] = None

    def hand_over(self, parser: HeadParser, protocol: interfaces.IProtocol) -> None:
        """Give the stream to ``protocol``, starting with what ``parser`` already read."""
        self._raw = protocol
        leftover, parser.buffer = parser.buffer, b""
        protocol.makeConnection(self.transport)
        if leftover:
            protocol.dataReceived(leftover)

    def readConnectionLost(self) -> None:
        if interfaces.IHalfCloseableProtocol.providedBy(self._raw):
            self._raw.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if interfaces.IHalfCloseableProtocol.providedBy(self._raw):
            self._raw.writeConnectionLost()
