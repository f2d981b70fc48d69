"""The HKD's metrics: its VMs by state, heavy operations, heartbeat age, VMA RPC failures.

The gauges are read from the HKD's own state at each scrape; the VMA RPC
failures are counted where a call fails (each failed attempt, retries
included), by RPC method.  Every name is listed in ``docs/operating.md``.
"""

from __future__ import annotations

from typing import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter

from qvd.metrics.live import LiveGauge

STATES = ("starting", "running", "debugging", "stopping", "zombie")


class HKDMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.vma_rpc_failures = Counter("qvd_hkd_vma_rpc_failures",
                                        "SimpleRPC calls to VMAs that failed, by method.",
                                        ["method"], registry=r)

    def vma_rpc_failed(self, method: str) -> None:
        self.vma_rpc_failures.labels(method).inc()

    def watch(self, vm_states: Callable[[], list[str]], heavy: Callable[[], tuple[int, int]],
              heartbeat_age: Callable[[], float]) -> None:
        """Read at each scrape: this HKD's VM handlers' states, (heavy operations running,
        waiting) and the seconds since its last successful heartbeat."""

        def by_state() -> Mapping[str, float]:
            counts = dict.fromkeys(STATES, 0)
            for state in vm_states():
                counts[state] = counts.get(state, 0) + 1
            return counts

        for gauge in (
            LiveGauge("qvd_hkd_vms", "VMs this HKD handles, by state.", by_state, "state"),
            LiveGauge("qvd_hkd_heavy_operations",
                      "VM starts and stops in progress (internal.hkd.max_heavy at most).",
                      lambda: heavy()[0]),
            LiveGauge("qvd_hkd_heavy_operations_waiting",
                      "VM starts and stops waiting for a heavy-operation slot.",
                      lambda: heavy()[1]),
            LiveGauge("qvd_hkd_heartbeat_age_seconds",
                      "Seconds since this HKD last wrote its heartbeat to QVD-DB.",
                      heartbeat_age),
        ):
            self.registry.register(gauge)
