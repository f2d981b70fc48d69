"""A daemon's QVD-DB connections as metrics: pool use, statement retries, LISTEN reconnects."""

from __future__ import annotations

from typing import Iterator, Optional

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from qvd.db.listener import Listener
from qvd.db.pool import Database


class DatabaseCollector:
    """Read at each scrape from the daemon's pool and LISTEN connection."""

    def __init__(self, database: Optional[Database], listener: Optional[Listener]):
        self.database = database
        self.listener = listener

    def collect(self) -> Iterator[Metric]:
        if self.database is not None:
            usage = self.database.usage()
            yield GaugeMetricFamily("qvd_db_pool_size", "Connections in the QVD-DB pool.",
                                    value=usage.size)
            yield GaugeMetricFamily("qvd_db_pool_in_use",
                                    "QVD-DB pool connections running a statement now.",
                                    value=usage.in_use)
            yield GaugeMetricFamily("qvd_db_pool_waiting",
                                    "Statements waiting for a free QVD-DB pool connection.",
                                    value=usage.waiting)
            yield CounterMetricFamily(
                "qvd_db_statement_retries", "Statements or transactions re-run after a"
                " serialization failure or deadlock (SQLSTATE 40001/40P01).",
                value=self.database.retries)
        if self.listener is not None:
            yield CounterMetricFamily("qvd_db_listen_reconnects",
                                      "Times the LISTEN connection to QVD-DB was restored.",
                                      value=self.listener.reconnects)
