"""Slowloris: hundreds of connections that never finish a request (or a TLS handshake)
cannot keep a real client from its ``I am alive!``, and ``l7r.timeout.first`` /
``l7r.timeout.head`` close them all (short values here, real sockets, bounded waits)."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any, Generator

import psutil
from twisted.internet import defer, task, threads
from twisted.trial import unittest

from tests.support.waiting import poll_blocking
from tests.support.l7r import ALIVE_BODY, Node, make_node, self_signed, start_l7r, tls_conf, tls_get
from tests.support.rawclient import RawClient, connect, get

FIRST = HEAD = 2.0  # seconds: long enough to open every idle connection before any expires
CLOSE = 1.0
TIMEOUTS = (f"l7r.timeout.first = {FIRST}\nl7r.timeout.head = {HEAD}\n"
            f"l7r.timeout.close = {CLOSE}\n")
EACH = 100  # connections of each kind
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 20\r\n\r\n408 Request Timeout\n")
# The first bytes of a TLS ClientHello record: a handshake that never completes.
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


def server_sockets(port: int) -> int:
    """Connections the in-process L7R (this process) holds on ``port``."""
    return sum(1 for c in psutil.Process().net_connections("tcp")
               if c.laddr.port == port and c.raddr)


class SlowlorisTests(unittest.TestCase):
    @defer.inlineCallbacks
    def open(self, node: Node, first_bytes: bytes) -> Generator[Any, Any, list[RawClient]]:
        """EACH connections that send ``first_bytes`` and then nothing by themselves."""
        clients = yield defer.gatherResults([connect(node.port) for _ in range(EACH)])
        for client in clients:
            self.addCleanup(lambda c=client: c.closed if c.closed.called else c.close())
            if first_bytes:
                client.send(first_bytes)
        return clients

    def still_open(self, clients: list[RawClient]) -> list[RawClient]:
        return [client for client in clients if not client.closed.called]

    @defer.inlineCallbacks
    def test_half_sent_heads(self) -> Generator[defer.Deferred[Any], Any, None]:
        node = yield start_l7r(self, make_node(self, TIMEOUTS))
        silent = yield self.open(node, b"")
        half = yield self.open(node, b"GET /qvd/ping HTTP/1.1\r\nUser-Agent: slow")
        trickling = yield self.open(node, b"G")
        # a byte every 0.2 s does not extend the head timeout: it runs from the first byte
        trickle = task.LoopingCall(lambda: [c.send(b"E") for c in self.still_open(trickling)])
        trickle.start(0.2, now=False)
        self.addCleanup(lambda: trickle.running and trickle.stop())
        everyone = silent + half + trickling

        reply = yield get(node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body), (200, ALIVE_BODY))
        self.assertEqual(len(self.still_open(everyone)), 3 * EACH, "served only after expiry")

        yield defer.gatherResults([client.wait_closed() for client in everyone])
        self.assertEqual({client.buffer for client in silent}, {b""})  # closed silently
        self.assertEqual({client.buffer for client in half + trickling}, {TIMED_OUT})

    @defer.inlineCallbacks
    def test_tls_clients_that_neither_read_nor_close_are_dropped(self) -> Generator[Any, Any, None]:
        """After its 408 the L7R waits ``l7r.timeout.close`` for the client to answer its
        TLS close, then aborts: a client that never reads or closes holds no socket."""
        node = make_node(self, TIMEOUTS)
        cert, key = self_signed(os.path.dirname(node.conf))
        with open(node.conf, "a") as f:
            f.write(tls_conf(cert, key))
        node = yield start_l7r(self, node, tls=True)
        context = ssl.create_default_context(cafile=cert)

        def half_heads() -> list[ssl.SSLSocket]:
            clients = []
            for _ in range(EACH):
                raw = socket.create_connection(("127.0.0.1", node.port), timeout=10)
                client = context.wrap_socket(raw, server_hostname="localhost")
                client.sendall(b"GET /qvd/ping HTTP/1.1\r\nUser-Agent: sl")
                clients.append(client)
            return clients

        clients = yield threads.deferToThread(half_heads)
        self.addCleanup(lambda: [client.close() for client in clients])
        self.assertEqual(server_sockets(node.port), EACH)
        yield poll_blocking(lambda: server_sockets(node.port), lambda n: n == 0, HEAD + CLOSE + 10,
                   "the L7R dropping its end of every silent client")
        reply = yield threads.deferToThread(tls_get, node.port, cert)
        self.assertEqual((reply.status, reply.body), (200, ALIVE_BODY))

    @defer.inlineCallbacks
    def test_unfinished_tls_handshakes(self) -> Generator[defer.Deferred[Any], Any, None]:
        node = make_node(self, TIMEOUTS)
        cert, key = self_signed(os.path.dirname(node.conf))
        with open(node.conf, "a") as f:
            f.write(tls_conf(cert, key))
        node = yield start_l7r(self, node, tls=True)
        silent = yield self.open(node, b"")
        partial = yield self.open(node, PARTIAL_CLIENT_HELLO)
        everyone = silent + partial

        reply = yield threads.deferToThread(tls_get, node.port, cert)
        self.assertEqual((reply.status, reply.body), (200, ALIVE_BODY))
        self.assertEqual(len(self.still_open(everyone)), 2 * EACH, "served only after expiry")

        yield defer.gatherResults([client.wait_closed() for client in everyone])
        self.assertEqual({client.buffer for client in silent}, {b""})
        self.assertEqual([c.buffer for c in partial if b"HTTP" in c.buffer], [])
