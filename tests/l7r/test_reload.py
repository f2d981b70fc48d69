"""The L7R's graceful reload on a real ``twistd qvd-l7r`` (a new generation that cannot
start, new code installed under a running L7R), its signal and pid file, the
``qvd-node reload`` command, and the listening socket's hand-over (live NX sessions across
a reload: ``tests/farm/test_reload.py``)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any, Generator

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from qvd.config import Config
from qvd.l7r.handler import ALIVE
from qvd.l7r.reload import ReloadControl, read_pid_file
from qvd.nodecli import main as qvd_node
from qvd.stream.transport import StreamPort
from tests.support.l7rprocess import L7RProcessTestCase, list_of_vm, listeners, ping
from tests.support.paths import ROOT
from tests.support.waiting import poll_blocking


def run_qvd_node(*argv: str) -> tuple[int, str, str]:
    """``qvd-node <argv>`` in this process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = qvd_node(list(argv))
    return status, out.getvalue(), err.getvalue()


def without(pids: set[int], pid: int) -> set[int] | None:
    """``pids`` once there are some and ``pid`` is not among them."""
    return pids if pids and pid not in pids else None


class QvdL7RReloadTests(L7RProcessTestCase):
    @defer.inlineCallbacks
    def test_a_broken_generation_changes_nothing_then_a_reload_hands_over(
            self) -> Generator[Any, Any, None]:
        """New processes that cannot start leave the running one serving; a reload
        that works moves the port to a new process (``l7r.processes = 1``) and the
        first process stays, accepting no more."""
        port, main, output = self.start_l7r(1)
        yield self.until(lambda: listeners(port) == {main.pid}, "the L7R listening")
        with open(self.l7r_conf) as f:
            good = f.read()
        with open(self.l7r_conf, "a") as f:  # TLS without a key: new processes cannot start
            f.write("l7r.use_ssl = 1\n")
        main.signalProcess("HUP")
        yield self.until(lambda: b"L7R reload failed" in output.output, "the reload given up")
        self.assertEqual(listeners(port), {main.pid})
        served = yield threads.deferToThread(list_of_vm, port, "alice:s3cret")
        self.assertEqual(served, (200, main.pid))

        with open(self.l7r_conf, "w") as f:
            f.write(good)
        status, out, err = run_qvd_node("-c", self.l7r_conf, "reload")
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"asked the L7R (pid {main.pid}) to reload", out)
        [worker] = yield self.until(lambda: without(listeners(port), main.pid),
                                    "a new process alone on the port")
        served = yield threads.deferToThread(list_of_vm, port, "alice:s3cret")
        self.assertEqual(served, (200, worker))
        self.assertFalse(output.ended.called, "the first process runs on")
        self.assertIn(b"L7R drained", output.output)

    @defer.inlineCallbacks
    def test_new_processes_run_the_code_installed_since(self) -> Generator[Any, Any, None]:
        """An upgrade: the package is replaced under the running L7R; after a reload
        the port is served by the new code."""
        installed = os.path.abspath(self.mktemp())
        for package in ("qvd", "twisted"):  # twisted/: the twistd plugins
            shutil.copytree(os.path.join(ROOT, package), os.path.join(installed, package),
                            ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
        port, main, output = self.start_l7r(1, pythonpath=installed)
        yield self.until(lambda: listeners(port) == {main.pid}, "the L7R listening")
        answer = yield threads.deferToThread(ping, port)
        self.assertTrue(answer.endswith(ALIVE), answer)

        handler = os.path.join(installed, "qvd", "l7r", "handler.py")
        with open(handler) as f:
            code = f.read()
        with open(handler, "w") as f:
            f.write(code.replace('ALIVE = b"I am alive!', 'ALIVE = b"I am alive, upgraded!'))
        main.signalProcess("HUP")
        yield self.until(lambda: without(listeners(port), main.pid),
                         "a new process alone on the port")
        answer = yield threads.deferToThread(ping, port)
        self.assertTrue(answer.endswith(b"I am alive, upgraded!\r\n"), answer)


class QvdNodeCommandTests(unittest.TestCase):
    def setUp(self) -> None:
        self.run = os.path.abspath(self.mktemp())
        self.conf = os.path.join(self.run, "node.conf")
        os.makedirs(self.run)
        with open(self.conf, "w") as f:
            f.write(f"path.run = {self.run}\n")
        self.pid_file = os.path.join(self.run, "qvd-l7r.pid")

    def test_no_daemon(self) -> None:
        status, out, err = run_qvd_node("-c", self.conf, "reload")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, f"qvd-node: no qvd-node or qvd-l7r daemon runs ({self.pid_file}"
                              " does not exist)\n")

    def test_a_pid_file_left_by_a_daemon_gone(self) -> None:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        with open(self.pid_file, "w") as f:
            f.write(f"{gone}\n")
        status, _, err = run_qvd_node("-c", self.conf, "reload")
        self.assertEqual(status, 1)
        self.assertIn(f"names pid {gone}, which is gone", err)

    def test_a_pid_that_is_not_a_daemon_gets_no_signal(self) -> None:
        with open(self.pid_file, "w") as f:
            f.write(f"{os.getpid()}\n")  # this test runner: SIGHUP would end it
        status, _, err = run_qvd_node("-c", self.conf, "reload")
        self.assertEqual(status, 1)
        self.assertIn(f"names pid {os.getpid()}, which is not qvd-node or qvd-l7r", err)

    def test_a_missing_node_conf(self) -> None:
        status, _, err = run_qvd_node("-c", os.path.join(self.run, "nope.conf"), "reload")
        self.assertEqual(status, 1)
        self.assertIn("cannot read configuration file", err)


class ReloadControlTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_sighup_reloads_and_the_pid_file_names_this_process(
            self) -> Generator[Any, Any, None]:
        run = os.path.abspath(self.mktemp())
        reloaded: defer.Deferred[None] = defer.Deferred()
        control = ReloadControl(lambda: reloaded.callback(None), Config({"path.run": run}),
                                reactor)
        previous = signal.getsignal(signal.SIGHUP)
        control.startService()
        pid_file = os.path.join(run, "qvd-l7r.pid")
        yield poll_blocking(lambda: os.path.exists(pid_file), bool, 10, "the pid file")
        self.assertEqual(read_pid_file(pid_file), os.getpid())
        os.kill(os.getpid(), signal.SIGHUP)
        yield reloaded.addTimeout(10, reactor)
        yield control.stopService()
        self.assertFalse(os.path.exists(pid_file))
        self.assertEqual(signal.getsignal(signal.SIGHUP), previous)


class _Kept(Protocol):
    def connectionMade(self) -> None:
        self.factory.kept.append(self)


class BacklogTests(unittest.TestCase):
    def test_the_queued_connections_are_accepted_before_the_socket_closes(self) -> None:
        """Closing a listening socket resets the connections the kernel queued on it;
        a draining L7R takes them first."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        factory = Factory.forProtocol(_Kept)
        factory.kept = []
        port = StreamPort(sock, factory, reactor)
        port.startListening()
        clients = [socket.create_connection(sock.getsockname(), timeout=5) for _ in range(5)]
        self.addCleanup(lambda: [c.close() for c in clients])
        port.take_backlog()  # the reactor has not run: all five are still queued
        port.stopListening()
        self.assertEqual(len(factory.kept), 5)
        for protocol in factory.kept:
            protocol.transport.abortConnection()
