"""Metrics as plain data: taken from a registry, summed across processes, exposed.

An L7R's worker processes each keep their own ``prometheus_client`` registry
and send a snapshot of it to the first process (``qvd.metrics.relay``); the
first process serves the sum of its own and its workers' snapshots.  A
snapshot is a list of families ``{"name", "type", "help", "samples"}``, each
sample ``[name, labels, value]``, so it travels as JSON.  ``_created``
samples (a counter's creation time) are left out: summing them is meaningless.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

Snapshot = list[dict[str, Any]]
MONOTONIC = ("counter", "histogram")  # families whose samples only grow


def take(registry: Collector) -> Snapshot:
    """What ``registry`` holds now."""
    return [{"name": family.name, "type": family.type, "help": family.documentation,
             "samples": [[s.name, dict(s.labels), s.value] for s in family.samples
                         if not s.name.endswith("_created")]}
            for family in registry.collect()]


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """One snapshot with the samples of equal name and labels summed, families in the
    order they were first seen."""
    families: dict[str, dict[str, Any]] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snapshot in snapshots:
        for family in snapshot:
            name = family["name"]
            if name not in families:
                families[name] = {k: family[k] for k in ("name", "type", "help")}
                sums[name] = {}
            for sample, labels, value in family["samples"]:
                key = (sample, tuple(sorted(labels.items())))
                sums[name][key] = sums[name].get(key, 0.0) + float(value)
    return [dict(family, samples=[[sample, dict(labels), value]
                                  for (sample, labels), value in sums[name].items()])
            for name, family in families.items()]


def monotonic(snapshot: Snapshot) -> Snapshot:
    """Only the counters and histograms of ``snapshot`` (what a process that is gone
    still contributes: its gauges went with it)."""
    return [family for family in snapshot if family["type"] in MONOTONIC]


class _Exposed:
    """A snapshot as a ``prometheus_client`` collector, for its text exposition."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        for family in self.snapshot:
            metric = Metric(family["name"], family["help"], family["type"])
            for sample, labels, value in family["samples"]:
                metric.add_sample(sample, labels, value)
            yield metric


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text format of ``snapshot``."""
    return generate_latest(_Exposed(snapshot))  # type: ignore[arg-type]
