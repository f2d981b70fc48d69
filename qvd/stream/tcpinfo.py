"""How many bytes a TCP connection carried each way, read once from the kernel at its end.

The splice must not count per chunk (DESIGN.md), and need not: Linux keeps
``tcpi_bytes_acked`` and ``tcpi_bytes_received`` for every TCP socket
(``TCP_INFO``, kernel 4.2 and later), and ``SIOCOUTQ`` tells what was written
but not yet acknowledged.  ``Tally.of`` keeps a duplicate of the socket's
descriptor so that the counts can still be read once Twisted has closed the
connection (Twisted shuts the socket down before closing it, so the duplicate
delays neither its FIN nor its reset); ``read`` reads them and lets it go.

The kernel counts the SYN and each FIN as a byte of sequence space; they are
taken off by the state the socket is in.  A connection reset by its peer may
leave one byte too many in a count.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any, Optional

_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received
_OFFSET = 120  # of tcpi_bytes_acked in struct tcp_info
_SIZE = _OFFSET + _BYTES.size
_OUTQ = struct.Struct("i")

# TCP states (include/net/tcp_states.h) in which our FIN, or the peer's, is counted
_FIN_WAIT1, _FIN_WAIT2, _TIME_WAIT, _CLOSE, _CLOSE_WAIT, _LAST_ACK, _CLOSING = 4, 5, 6, 7, 8, 9, 11
_OUR_FIN = frozenset({_FIN_WAIT1, _FIN_WAIT2, _TIME_WAIT, _CLOSE, _LAST_ACK, _CLOSING})
_THEIR_FIN = frozenset({_TIME_WAIT, _CLOSE, _CLOSE_WAIT, _LAST_ACK, _CLOSING})


@dataclass(frozen=True)
class Bytes:
    """Payload bytes this end wrote toward its peer, and received from it."""

    sent: int
    received: int


def counts(info: bytes, unacknowledged: int) -> Optional[Bytes]:
    """The payload counts of a ``TCP_INFO`` answer and the socket's ``SIOCOUTQ`` (None if
    the kernel has no such fields)."""
    if len(info) < _SIZE:
        return None
    acked, received = _BYTES.unpack_from(info, _OFFSET)
    state = info[0]
    sent = acked + unacknowledged - 1 - (1 if state in _OUR_FIN else 0)  # 1: the SYN
    received -= 1 if state in _THEIR_FIN else 0
    return Bytes(max(0, sent), max(0, received))


class Tally:
    """One TCP connection's byte counts, readable once, even after it was closed."""

    def __init__(self, fd: int):
        self._fd: Optional[int] = fd

    @classmethod
    def of(cls, transport: Any) -> Optional["Tally"]:
        """A tally of ``transport``'s socket; None for anything but a TCP socket."""
        handle = getattr(transport, "getHandle", lambda: None)()
        if not isinstance(handle, socket.socket) or handle.type != socket.SOCK_STREAM \
                or handle.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        return cls(os.dup(handle.fileno()))

    def read(self) -> Optional[Bytes]:
        """The counts now; the duplicate descriptor is closed (later calls give None)."""
        if self._fd is None:
            return None
        sock = socket.socket(fileno=self._fd)
        self._fd = None
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(_OUTQ.size))
            return counts(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _SIZE),
                          _OUTQ.unpack(queued)[0])
        except OSError:
            return None
        finally:
            sock.close()

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
