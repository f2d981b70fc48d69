"""Gauges read from the daemon's own state at each scrape, instead of kept up to date."""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily, Metric


class LiveGauge:
    """A gauge whose value is ``read()``; with ``label``, ``read()`` gives a value per
    label value."""

    def __init__(self, name: str, documentation: str,
                 read: Callable[[], float | Mapping[str, float]], label: str = ""):
        self.name = name
        self.documentation = documentation
        self.read = read
        self.label = label

    def collect(self) -> Iterator[Metric]:
        if not self.label:
            yield GaugeMetricFamily(self.name, self.documentation, value=self.read())
            return
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, number in sorted(self.read().items()):  # type: ignore[union-attr]
            family.add_metric([value], number)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation,
                                labels=[self.label] if self.label else None)
