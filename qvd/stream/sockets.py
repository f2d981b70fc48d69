"""Socket options for interactive streams (HTTP requests, NX sessions), and a free port."""

from __future__ import annotations

import socket

from twisted.internet import interfaces


def tune(transport: interfaces.ITransport) -> None:
    """TCP_NODELAY and SO_KEEPALIVE, where the transport has a TCP socket (not on the
    UNIX sockets of slave channels)."""
    if interfaces.ITCPTransport.providedBy(transport):
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        return
    handle = getattr(transport, "getHandle", lambda: None)()
    if isinstance(handle, socket.socket) and handle.family in (socket.AF_INET, socket.AF_INET6):
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's pick; taken again by the caller)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
