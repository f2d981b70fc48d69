"""``l7r.processes``: several real L7R processes share the port and are kept running."""

from __future__ import annotations

import os
import signal
from typing import Any, Generator

from twisted.internet import defer, reactor, threads
from twisted.logger import LogLevel, capturedLogs, eventAsJSON, formatEvent
from twisted.trial import unittest

from qvd.l7r.workers import WorkerPool
from tests.support.l7rprocess import L7RProcessTestCase, list_of_vm, listeners, ping


class WorkerTests(L7RProcessTestCase):
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
