"""``l7r.processes``: several real L7R processes share the port and are kept running."""

from __future__ import annotations

import base64
import os
import signal
import socket
import sys
from typing import Any, Generator

import psutil
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import LogLevel, capturedLogs, eventAsJSON, formatEvent
from twisted.trial import unittest

from qvd.l7r.workers import WorkerPool
from qvd.passwords import qvd_hash
from qvd.pgcluster import free_port
from tests.support.waiting import poll_blocking
from tests.support.postgres import drop_database, new_database
from tests.support.paths import ROOT, TWISTD
from tests.support.rawclient import split_response



class _Quiet(ProcessProtocol):
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


class WorkerTests(unittest.TestCase):
    timeout = 60

    def until(self, check: Any, what: str, timeout: float = 20) -> defer.Deferred:
        """Bounded wait for a condition on real processes."""
        return poll_blocking(check, bool, timeout, what)

    def start_l7r(self, processes: int, *twistd: str, conf: str = "") -> tuple[int, Any, _Quiet]:
        """A real ``twistd -n <twistd options> qvd-l7r`` with ``l7r.processes``, on a
        fresh QVD-DB (user alice, password s3cret); ``conf`` is more node.conf."""
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
        output = _Quiet()
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *twistd, "qvd-l7r",
                "--config", conf]
        main = reactor.spawnProcess(output, argv[0], argv, env=dict(os.environ, PYTHONPATH=ROOT),
                                    path=directory)

        @defer.inlineCallbacks
        def stop() -> Generator[Any, Any, None]:
            if not output.ended.called:
                main.signalProcess("KILL")
            yield output.ended  # reaped, its pipes closed: nothing left in the reactor
            yield self.until(lambda: not listeners(port), "every L7R process gone")

        self.addCleanup(stop)
        return port, main, output

    @defer.inlineCallbacks
    def test_workers_share_the_port_and_are_restarted(self) -> Generator[Any, Any, None]:
        port, main, output = self.start_l7r(processes=3)

        def three(without: int = 0) -> set[int] | None:
            now = listeners(port)
            return now if len(now) == 3 and without not in now else None

        pids = yield self.until(three, "three listening L7R processes")
        self.assertIn(main.pid, pids)
        answers = yield threads.deferToThread(lambda: [ping(port) for _ in range(30)])
        self.assertTrue(all(a.endswith(b"I am alive!\r\n") for a in answers), answers[:1])

        victim = next(pid for pid in pids if pid != main.pid)
        os.kill(victim, signal.SIGKILL)
        replaced = yield self.until(lambda: three(without=victim), "a replacement worker")
        self.assertEqual(len(replaced - pids), 1)

        main.signalProcess("TERM")
        yield output.ended
        yield self.until(lambda: not listeners(port), "all workers ending")

    @defer.inlineCallbacks
    def test_failed_logins_are_counted_for_all_processes(self) -> Generator[Any, Any, None]:
        """Five wrong passwords, wherever the kernel sent them, lock the login in every
        process: none of ten tries with the right password gets in (counted per process,
        a worker that saw fewer than five would let one through)."""
        port, main, output = self.start_l7r(
            processes=2, conf="l7r.auth.throttle.max_failures = 5\n")
        yield self.until(lambda: len(listeners(port)) == 2, "two listening L7R processes")
        wrong = yield threads.deferToThread(
            lambda: [list_of_vm(port, "alice:wrong") for _ in range(5)])
        self.assertEqual({status for status, _ in wrong}, {401})
        right = yield threads.deferToThread(
            lambda: [list_of_vm(port, "alice:s3cret") for _ in range(10)])
        self.assertEqual([status for status, _ in right], [401] * 10)
        served_by = {pid for _, pid in wrong + right}
        self.assertEqual(len(served_by), 2, "both processes answered")

    @defer.inlineCallbacks
    def test_workers_stop_when_the_first_process_is_killed(self) -> Generator[Any, Any, None]:
        """No orphan keeps serving the port after the supervising process died."""
        port, main, output = self.start_l7r(processes=2)
        yield self.until(lambda: len(listeners(port)) == 2, "two listening L7R processes")
        main.signalProcess("KILL")
        yield self.until(lambda: not listeners(port), "the orphaned worker stopping")
        yield output.ended

    @defer.inlineCallbacks
    def test_workers_log_to_the_first_process_log_file(self) -> Generator[Any, Any, None]:
        """Not to a stdout that a daemon does not have."""
        logfile = os.path.abspath(self.mktemp())
        port, main, output = self.start_l7r(2, f"--logfile={logfile}")
        yield self.until(lambda: len(listeners(port)) == 2, "two listening L7R processes")

        listening = f"[qvd.l7r.service#info worker 0] L7R listening on 127.0.0.1:{port}"

        def logged() -> bool:
            with open(logfile, errors="replace") as f:
                return listening in f.read()

        yield self.until(logged, "the worker's start in the log file")
        self.assertNotIn(b"L7R listening", output.output)


class RelayTests(unittest.TestCase):
    """The first process's side of the worker log pipe."""

    def setUp(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.pool = WorkerPool(reactor, 1, None, publish=self.published.append)

    def test_a_worker_event_keeps_its_fields_and_names_the_worker(self) -> None:
        record = "\x1e" + eventAsJSON({"log_namespace": "qvd.l7r.connect",
                                       "log_level": LogLevel.warn, "log_time": 1700000000.5,
                                       "log_format": "VM {vm_id} gone", "vm_id": 7}) + "\n"
        self.pool.relay(2, record.encode())
        [event] = self.published
        self.assertEqual(formatEvent(event), "VM 7 gone")
        self.assertEqual((event["log_system"], event["log_time"], event["log_level"]),
                         ("qvd.l7r.connect#warn worker 2", 1700000000.5, LogLevel.warn))

    def test_anything_else_is_logged_as_text(self) -> None:
        with capturedLogs() as captured:
            for line in (b"Traceback (most recent call last):", b"[1, 2]", b"{}", b"  \r"):
                self.pool.relay(1, line)
        self.assertEqual(self.published, [])
        self.assertEqual([formatEvent(e) for e in captured],
                         ["worker 1: Traceback (most recent call last):", "worker 1: [1, 2]",
                          "worker 1: {}"])
