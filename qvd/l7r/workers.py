"""Extra L7R worker processes on the same port (SO_REUSEPORT), kept running.

Each worker is a whole ``qvd-l7r --worker``: its own reactor, database pool
and LISTEN connection (so it hears the aborts addressed to its own pid).
A worker that dies is started again after a short, growing delay; a worker
whose first process died (even by SIGKILL) sees its stdin pipe close and
stops, so no orphan keeps serving the port unsupervised.  A worker's log
events travel as JSON on its stdout to the first process, which publishes
them to its own observers (``--logfile``, syslog or stdout) marked with the
worker's number; its metrics travel the same way (``qvd.metrics.relay``).

A graceful reload (``qvd.l7r.reload``) starts a new pool (a new generation,
fresh processes running whatever code is installed now) beside the old one,
waits until each new worker reports that it listens, then writes ``drain`` on
the old workers' stdin: each stops accepting, serves its open connections to
their end (at most ``l7r.reload.drain_timeout`` seconds) and exits; a draining
worker that ends is not restarted.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer, error, interfaces, protocol
from twisted.logger import (ILogObserver, Logger, eventFromJSON, globalLogPublisher,
                            jsonFileLogObserver)
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.metrics.relay import WorkerReports, is_report
from qvd.stream.lines import LineSplitter

log = Logger()

RESTART_DELAYS = (1, 2, 5, 10, 30)
STOP_TIMEOUT = 20.0  # seconds a stopping worker has to release its sessions before SIGKILL
DRAIN = b"drain"  # a line on a worker's stdin: stop accepting, finish, exit
LISTENING = "l7r_listening"  # set on the log event of an L7R whose port is open


class WorkerFailed(Exception):
    """A new worker ended before it listened."""


def to_parent() -> ILogObserver:
    """A worker's log observer (``twistd --logger``): JSON events on its stdout."""
    return jsonFileLogObserver(sys.stdout)


def worker_argv(config_path: Optional[str]) -> list[str]:
    """How a worker is started: this L7R again, with ``--worker``."""
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", f"--logger={__name__}.to_parent", "qvd-l7r", "--worker"]
    if config_path:
        argv += ["--config", os.path.abspath(config_path)]
    return argv


@implementer(interfaces.IReadDescriptor)
class ParentPipe:
    """A worker's stdin: the first process writes ``DRAIN`` on it to have the worker
    drain; its end of file means the parent is gone."""

    def __init__(self, on_lost: Callable[[], None], on_drain: Callable[[], None]):
        self.on_lost = on_lost
        self.on_drain = on_drain
        self._commands = LineSplitter()

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Optional[Failure]:
        data = os.read(0, 4096)
        if not data:
            return Failure(error.ConnectionDone("the first L7R process is gone"))
        for command in self._commands.feed(data):
            if command == DRAIN:
                self.on_drain()
        return None

    def connectionLost(self, reason: Failure) -> None:
        log.warn("the L7R process that started this worker is gone; stopping")
        self.on_lost()

    def logPrefix(self) -> str:
        return "l7r-parent"


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: "WorkerPool", slot: int):
        self.pool = pool
        self.slot = slot
        self.exited: defer.Deferred[None] = defer.Deferred()
        self.listening: defer.Deferred[None] = defer.Deferred()
        self._records = LineSplitter()

    def outReceived(self, data: bytes) -> None:
        """Log records, one per line; a runaway line is passed on in pieces."""
        for record in self._records.feed(data):
            self.pool.relay(self.slot, record)

    def processEnded(self, reason: Any) -> None:
        if self._records.partial:
            self.pool.relay(self.slot, self._records.partial)
        if not self.listening.called:
            self.listening.errback(WorkerFailed(f"L7R worker {self.slot} ended before it"
                                                " listened"))
        self.exited.callback(None)
        self.pool.ended(self)


class WorkerPool(Service):
    """One generation of workers, numbered from ``first``."""

    name = "l7r-workers"

    def __init__(self, reactor: Any, count: int, config_path: Optional[str],
                 publish: Callable[[dict[str, Any]], None] = globalLogPublisher,
                 reports: Optional[WorkerReports] = None, first: int = 0):
        self.reactor = reactor
        self.count = count
        self.first = first
        self.draining = False
        self.config_path = config_path
        self.publish = publish
        self.reports = reports or WorkerReports()  # the workers' metrics (qvd.metrics.relay)
        self.workers: dict[int, _Worker] = {}
        self._failures: dict[int, int] = {}

    def startService(self) -> None:
        super().startService()
        for slot in range(self.first, self.first + self.count):
            self.spawn(slot)

    def listening(self) -> defer.Deferred[Any]:
        """Fires once every worker started so far listens; fails with ``WorkerFailed``
        as soon as one of them ends before."""
        return defer.gatherResults([w.listening for w in self.workers.values()],
                                   consumeErrors=True)

    def drain(self, timeout: float) -> defer.Deferred[Any]:
        """Have every worker drain and exit (none is restarted); fires once all have
        exited, SIGKILLing those still there ``STOP_TIMEOUT`` s after ``timeout``."""
        self.draining = True
        return self._ending(lambda worker: worker.transport.write(DRAIN + b"\n"),
                            timeout + STOP_TIMEOUT)

    def spawn(self, slot: int) -> None:
        if not self.running:
            return
        worker = _Worker(self, slot)
        argv = worker_argv(self.config_path)
        self.reactor.spawnProcess(worker, argv[0], argv, env=os.environ,
                                  childFDs={0: "w", 1: "r", 2: 2})
        self.workers[slot] = worker
        log.info("started L7R worker {slot} (pid {pid})", slot=slot, pid=worker.transport.pid)

    def relay(self, slot: int, record: bytes) -> None:
        """Publish one of a worker's log records here, its origin in the system field."""
        text = record.decode("utf-8", "replace").strip("\x1e \r\n")
        if not text:
            return
        try:
            event = eventFromJSON(text)
            level = event["log_level"].name
            event["log_system"] = f"{event['log_namespace']}#{level} worker {slot}"
        except (ValueError, KeyError, TypeError, AttributeError):  # not one of its records
            log.info("worker {slot}: {text}", slot=slot, text=text)
            return
        worker = self.workers.get(slot)
        if event.get(LISTENING) and worker is not None and not worker.listening.called:
            worker.listening.callback(None)
        if is_report(event):
            self.reports.update(slot, event["metrics"])
            return
        self.publish(event)

    def ended(self, worker: _Worker) -> None:
        if self.workers.get(worker.slot) is not worker:
            return
        self.reports.retire(worker.slot)
        if not self.running or self.draining:
            return
        failures = self._failures.get(worker.slot, 0)
        delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
        self._failures[worker.slot] = failures + 1
        log.warn("L7R worker {slot} ended; restarting it in {delay}s", slot=worker.slot,
                 delay=delay)
        self.reactor.callLater(delay, self.spawn, worker.slot)

    def stopService(self) -> defer.Deferred[Any]:
        """TERM every worker and wait until each has released its sessions and exited
        (SIGKILL after ``STOP_TIMEOUT``)."""
        super().stopService()
        return self._ending(lambda worker: worker.transport.signalProcess("TERM"), STOP_TIMEOUT)

    def _ending(self, tell: Callable[[_Worker], None], timeout: float) -> defer.Deferred[Any]:
        """``tell`` every live worker to end, and wait until each has (SIGKILL after
        ``timeout``)."""
        waits = []
        for worker in self.workers.values():
            if worker.exited.called or worker.transport is None or worker.transport.pid is None:
                continue
            tell(worker)
            killer = self.reactor.callLater(timeout, self._kill, worker)
            worker.exited.addCallback(lambda _, k=killer: k.cancel() if k.active() else None)
            waits.append(worker.exited)
        return defer.DeferredList(waits)

    @staticmethod
    def _kill(worker: _Worker) -> None:
        log.warn("L7R worker {slot} did not stop in time: killing it", slot=worker.slot)
        try:
            worker.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
