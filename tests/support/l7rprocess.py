"""A real ``twistd qvd-l7r`` process (``l7r.processes``, plain HTTP on a free port) on a fresh
QVD-DB, and what a test asks of it: which processes listen, which one served a request."""

from __future__ import annotations

import base64
import os
import socket
import sys
from typing import Any, Generator

import psutil
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from qvd.passwords import qvd_hash
from qvd.stream.sockets import free_port
from tests.support.paths import ROOT, TWISTD
from tests.support.postgres import drop_database, new_database
from tests.support.rawclient import split_response
from tests.support.waiting import poll_blocking


class Output(ProcessProtocol):
    """A process's output, kept; ``ended`` fires once it is reaped."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


def listeners(port: int) -> set[int]:
    """Pids with a socket listening on ``port``."""
    return {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}


def list_of_vm(port: int, credentials: str) -> tuple[int, int]:
    """(HTTP status, pid of the L7R process that served it) of one list_of_vm."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        authorization = base64.b64encode(credentials.encode()).decode()
        s.sendall(f"GET /qvd/list_of_vm HTTP/1.1\nAuthorization: Basic {authorization}\n\n"
                  .encode())
        status = int(s.recv(4096).split()[1])
        server = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port
                  and c.raddr and c.raddr.port == s.getsockname()[1] and c.pid}
        return status, server.pop()


def ping(port: int) -> bytes:
    """The whole answer to one ping (its head and body may come in separate segments)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /qvd/ping HTTP/1.1\n\n")
        answer = b""
        while split_response(answer) is None:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


class L7RProcessTestCase(unittest.TestCase):
    """Tests on a real ``twistd qvd-l7r`` process (and its workers)."""

    timeout = 60

    def until(self, check: Any, what: str, timeout: float = 20) -> defer.Deferred:
        """Bounded wait for a condition on real processes."""
        return poll_blocking(check, bool, timeout, what)

    def start_l7r(self, processes: int, *twistd: str, conf: str = "",
                  pythonpath: str = ROOT) -> tuple[int, Any, Output]:
        """A real ``twistd -n <twistd options> qvd-l7r`` with ``l7r.processes``, on a
        fresh QVD-DB (user alice, password s3cret); ``conf`` is more node.conf (its file
        is ``self.l7r_conf``); the code is the one found on ``pythonpath``."""
        db = new_database()
        self.addCleanup(drop_database, db)
        db.query("INSERT INTO hosts (name, address, frontend, backend)"
                 " VALUES ('test-node', '127.0.0.1', true, true)")
        db.query("INSERT INTO host_runtimes (host_id, state, blocked, ok_ts)"
                 " SELECT id, 'running', false, now() FROM hosts")
        db.query("INSERT INTO host_counters (host_id) SELECT id FROM hosts")
        db.query("INSERT INTO users (tenant_id, login, password) SELECT id, 'alice', %s"
                 " FROM tenants WHERE name = 'default'", (qvd_hash("s3cret", "qvd1234"),))
        port = free_port()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        conf = db.write_conf(directory, f"l7r.use_ssl = 0\nl7r.port = {port}\n"
                                        f"l7r.processes = {processes}\nl7r.address = 127.0.0.1\n"
                                        f"path.run = {directory}/run\n{conf}")
        self.l7r_conf = conf
        output = Output()
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *twistd, "qvd-l7r",
                "--config", conf]
        main = reactor.spawnProcess(output, argv[0], argv, env=dict(os.environ, PYTHONPATH=pythonpath),
                                    path=directory)

        @defer.inlineCallbacks
        def stop() -> Generator[Any, Any, None]:
            if not output.ended.called:
                main.signalProcess("KILL")
            yield output.ended  # reaped, its pipes closed: nothing left in the reactor
            yield self.until(lambda: not listeners(port), "every L7R process gone")

        self.addCleanup(stop)
        return port, main, output
