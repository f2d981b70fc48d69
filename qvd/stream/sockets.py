"""Socket options for interactive streams (HTTP requests, NX sessions)."""

from __future__ import annotations

import socket

from twisted.internet import interfaces


def tune(transport: interfaces.ITransport) -> None:
    """TCP_NODELAY and SO_KEEPALIVE, where the transport has a socket."""
    if interfaces.ITCPTransport.providedBy(transport):
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        return
    handle = getattr(transport, "getHandle", lambda: None)()
    if isinstance(handle, socket.socket):
        handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
