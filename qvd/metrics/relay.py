"""Worker processes' metrics, carried to the first L7R process over the log pipe.

A worker already sends its log events as JSON lines on its stdout to the
first process (``qvd.l7r.workers``).  Every ``INTERVAL`` seconds it also logs
one event in the ``NAMESPACE`` namespace carrying a snapshot of its registry;
the first process takes such events out of the stream (they are never
logged) and hands them to ``WorkerReports``, which serves their sum beside
its own metrics.  A worker that ends leaves its counters and histograms in
the sum (so they never go down) and takes its gauges with it.
"""

from __future__ import annotations

from typing import Any, Mapping

from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qvd.metrics.snapshot import Snapshot, merge, monotonic, take

NAMESPACE = "qvd.metrics.relay"
INTERVAL = 1.0

_relay = Logger(namespace=NAMESPACE)


def is_report(event: Mapping[str, Any]) -> bool:
    return event.get("log_namespace") == NAMESPACE and isinstance(event.get("metrics"), list)


class ReportSender(Service):
    """A worker's side: a snapshot of ``registry`` as a log event every ``INTERVAL`` s."""

    def __init__(self, registry: Collector, clock: IReactorTime):
        self.loop = task.LoopingCall(lambda: _relay.debug("metrics", metrics=take(registry)))
        self.loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self.loop.start(INTERVAL)

    def stopService(self) -> None:
        super().stopService()
        if self.loop.running:
            self.loop.stop()


class WorkerReports:
    """The first process's side: the latest snapshot of each worker slot."""

    def __init__(self) -> None:
        self._latest: dict[int, Snapshot] = {}
        self._gone: Snapshot = []

    def update(self, slot: int, snapshot: Snapshot) -> None:
        self._latest[slot] = snapshot

    def retire(self, slot: int) -> None:
        """The worker in ``slot`` ended: keep what it counted, drop what it held."""
        last = self._latest.pop(slot, None)
        if last is not None:
            self._gone = merge([self._gone, monotonic(last)])

    @property
    def reporting(self) -> int:
        """Workers alive that have reported."""
        return len(self._latest)

    def snapshots(self) -> list[Snapshot]:
        return [self._gone, *self._latest.values()]
