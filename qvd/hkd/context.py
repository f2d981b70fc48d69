"""What every part of one HKD shares: configuration, database, clock, host, backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from qvd.config import Config
from qvd.db.pool import Database
from qvd.hkd.hypervisor import IHypervisor
from qvd.metrics.hkd import HKDMetrics

HEAVY_KEY = "internal.hkd.max_heavy"


class HeavyLimit:
    """QVD 4's "heavy" semaphore: at most ``limit`` VMs in setup or teardown at once.

    Unlike ``DeferredSemaphore`` its limit can shrink while it is held.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._waiting: list[defer.Deferred[None]] = []

    def acquire(self) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        self._admit()
        return waiter

    def release(self) -> None:
        self.held -= 1
        self._admit()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.held < self.limit:
            self.held += 1
            self._waiting.pop(0).callback(None)


@dataclass
class HKDContext:
    config: Config
    db: Database
    reactor: Any  # IReactorTime + IReactorTCP (+ IReactorProcess for the process backend)
    host_id: int
    hypervisor: IHypervisor
    heavy: HeavyLimit = field(init=False)
    metrics: HKDMetrics = field(default_factory=HKDMetrics)

    def __post_init__(self) -> None:
        self.heavy = HeavyLimit(max(1, self.config.get_int(HEAVY_KEY)))
        self.config.add_observer(self._resize_heavy)

    def _resize_heavy(self, config: Config) -> None:
        """``internal.hkd.max_heavy`` follows live reloads, as in QVD 4."""
        self.heavy.resize(max(1, config.get_int(HEAVY_KEY)))

    def close(self) -> None:
        self.config.remove_observer(self._resize_heavy)

    def timeout(self, path: str) -> float:
        """``internal.hkd.<backend>.timeout.on_state.<path>``, ``*`` standing for the backend."""
        name = self.hypervisor.name
        key = f"internal.hkd.{name}.timeout.on_state.{path.replace('*', name)}"
        return self.config.get_float(key)

