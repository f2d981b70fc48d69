"""A real haproxy health-checks an in-process L7R with ``GET /qvd/ping`` (HTTP/1.1, no
Host), as an administrator's load balancer in front of several nodes would: the server
is UP while the host runs, DOWN once it is blocked (503 "Server is blocked") or not
running, and UP again when unblocked.  haproxy (Debian's 2.6) runs in the foreground
as a child process with its configuration in the test's temporary directory; its view
is read from its stats socket."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Generator

from twisted.internet import defer
from twisted.trial import unittest

from qvd.farm.haproxy import binary, show_stat
from qvd.stream.sockets import free_port
from tests.support.waiting import poll_blocking
from tests.support.l7r import make_node, start_l7r
from tests.support.rawclient import get

WAIT = 15.0  # seconds haproxy may take to see a change (checks run every 200 ms)

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout check 2s
listen qvd
    bind 127.0.0.1:{port}
    option httpchk
    http-check send meth GET uri /qvd/ping ver HTTP/1.1
    http-check expect status 200
    server node 127.0.0.1:{backend} check inter 200ms rise 1 fall 1
"""


class HAProxy:
    """``haproxy -db`` checking one server; ``server()`` is its (status, check code)."""

    def __init__(self, directory: str, backend: int):
        self.socket = os.path.join(directory, "haproxy.sock")
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(CONFIG.format(socket=self.socket, port=free_port(), backend=backend))
        self.log = open(os.path.join(directory, "haproxy.log"), "wb")
        self.process = subprocess.Popen([binary(), "-db", "-f", config],
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.log.close()

    def server(self) -> tuple[str, str]:
        """(status, last check's HTTP code) of the server, from ``show stat``; blocking."""
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.process.returncode}:"
                                 f" see {self.log.name}")
        rows = show_stat(self.socket)
        if not rows:
            return "not started", ""
        row = next(r for r in rows if r["pxname"] == "qvd" and r["svname"] == "node")
        return row["status"], row["check_code"]


class HealthCheckTests(unittest.TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Generator[defer.Deferred[Any], Any, None]:
        self.node = yield start_l7r(self, make_node(self))  # plain HTTP, host running
        directory = tempfile.mkdtemp(prefix="qvd-hc-")  # short: a socket path is <= 107 bytes
        self.addCleanup(shutil.rmtree, directory, True)
        self.haproxy = HAProxy(directory, self.node.port)
        self.addCleanup(self.haproxy.stop)

    def seen(self, status: str, code: str) -> defer.Deferred[Any]:
        """Fires once haproxy reports ``status`` after a check answered ``code``."""
        return poll_blocking(self.haproxy.server, lambda s: s == (status, code), WAIT,
                    f"haproxy's view of the L7R, waiting for {status} ({code})")

    @defer.inlineCallbacks
    def test_block_unblock_and_host_state(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.seen("UP", "200")

        self.node.qa("qa host name=test-node block")
        yield self.seen("DOWN", "503")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body), (503, b"Server is blocked"))

        self.node.qa("qa host name=test-node unblock")
        yield self.seen("UP", "200")

        self.node.sql("UPDATE host_runtimes SET state = 'stopped'")
        yield self.seen("DOWN", "503")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body), (503, b"Server is stopped"))
