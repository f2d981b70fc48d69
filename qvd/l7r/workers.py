"""Extra L7R worker processes on the same port (SO_REUSEPORT), kept running.

Each worker is a whole ``qvd-l7r --worker``: its own reactor, database pool
and LISTEN connection (so it hears the aborts addressed to its own pid).
A worker that dies is started again after a short, growing delay; a worker
whose first process died (even by SIGKILL) sees its stdin pipe close and
stops, so no orphan keeps serving the port unsupervised.  A worker's log
events travel as JSON on its stdout to the first process, which publishes
them to its own observers (``--logfile``, syslog or stdout) marked with the
worker's number; its metrics travel the same way (``qvd.metrics.relay``).
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
    """A worker's stdin, written to by nobody: its end of file means the parent is gone."""

    def __init__(self, on_lost: Callable[[], None]):
        self.on_lost = on_lost

    def fileno(self) -> int:
        return 0

    def doRead(self) -> Optional[Failure]:
        if not os.read(0, 4096):
            return Failure(error.ConnectionDone("the first L7R process is gone"))
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
        self._records = LineSplitter()

    def outReceived(self, data: bytes) -> None:
        """Log records, one per line; a runaway line is passed on in pieces."""
        for record in self._records.feed(data):
            self.pool.relay(self.slot, record)

    def processEnded(self, reason: Any) -> None:
        if self._records.partial:
            self.pool.relay(self.slot, self._records.partial)
        self.exited.callback(None)
        self.pool.ended(self)


class WorkerPool(Service):
    name = "l7r-workers"

    def __init__(self, reactor: Any, count: int, config_path: Optional[str],
                 publish: Callable[[dict[str, Any]], None] = globalLogPublisher,
                 reports: Optional[WorkerReports] = None):
        self.reactor = reactor
        self.count = count
        self.config_path = config_path
        self.publish = publish
        self.reports = reports or WorkerReports()  # the workers' metrics (qvd.metrics.relay)
        self.workers: dict[int, _Worker] = {}
        self._failures: dict[int, int] = {}

    def startService(self) -> None:
        super().startService()
        for slot in range(self.count):
            self.spawn(slot)

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
        if is_report(event):
            self.reports.update(slot, event["metrics"])
            return
        self.publish(event)

    def ended(self, worker: _Worker) -> None:
        if self.workers.get(worker.slot) is not worker:
            return
        self.reports.retire(worker.slot)
        if not self.running:
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
        waits = []
        for worker in self.workers.values():
            if worker.exited.called or worker.transport is None or worker.transport.pid is None:
                continue
            worker.transport.signalProcess("TERM")
            killer = self.reactor.callLater(STOP_TIMEOUT, self._kill, worker)
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
