"""How many bytes a TCP connection carried each way, read once from the kernel at its end.

The splice must not count per chunk (DESIGN.md), and need not: Linux keeps
``tcpi_bytes_acked`` and ``tcpi_bytes_received`` for every TCP socket
(``TCP_INFO``, kernel 4.2 and later).  ``Tally.of`` keeps a duplicate of the
socket's descriptor so the counts can still be read after Twisted closed it;
``read`` reads them once and lets the duplicate go.  The kernel counts the SYN
and each FIN as a byte of sequence space; they are taken off by the state the
socket is in.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, Optional

_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received
_OFFSET = 120  # of tcpi_bytes_acked in struct tcp_info
_SIZE = _OFFSET + _BYTES.size

# TCP states (include/net/tcp_states.h)
_FIN_WAIT2, _TIME_WAIT, _CLOSE_WAIT, _LAST_ACK, _CLOSING = 5, 6, 8, 9, 11
_OUR_FIN_ACKED = frozenset({_FIN_WAIT2, _TIME_WAIT})
_THEIR_FIN_IN = frozenset({_CLOSE_WAIT, _LAST_ACK, _CLOSING, _TIME_WAIT})


@dataclass(frozen=True)
class Bytes:
    """Payload bytes this end sent (and the peer acknowledged) and received."""

    sent: int
    received: int


def counts(info: bytes, connected_here: bool = True) -> Optional[Bytes]:
    """The payload counts in a ``TCP_INFO`` answer (None if the kernel has no such fields).

    ``connected_here``: this end sent the SYN (its count includes it)."""
    if len(info) < _SIZE:
        return None
    acked, received = _BYTES.unpack_from(info, _OFFSET)
    state = info[0]
    sent = acked - (1 if connected_here else 0) - (1 if state in _OUR_FIN_ACKED else 0)
    received -= 1 if state in _THEIR_FIN_IN else 0
    return Bytes(max(0, sent), max(0, received))


class Tally:
    """One TCP connection's byte counts, readable once, even after it was closed."""

    def __init__(self, fd: int, connected_here: bool):
        self._fd: Optional[int] = fd
        self.connected_here = connected_here

    @classmethod
    def of(cls, transport: Any, connected_here: bool = True) -> Optional["Tally"]:
        """A tally of ``transport``'s socket; None for anything but a TCP socket."""
        handle = getattr(transport, "getHandle", lambda: None)()
        if not isinstance(handle, socket.socket) or handle.type != socket.SOCK_STREAM \
                or handle.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return cls(os.dup(handle.fileno()), connected_here)

    def read(self) -> Optional[Bytes]:
        """The counts now; the duplicate descriptor is closed (later calls give None)."""
        if self._fd is None:
            return None
        sock = socket.socket(fileno=self._fd)
        self._fd = None
        try:
            return counts(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _SIZE),
                          self.connected_here)
        except OSError:
            return None
        finally:
            sock.close()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
