"""The metrics' pieces: snapshots summed across processes, the workers' reports on the
log pipe, and the admin listener on a real loopback port."""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any, Generator

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher, jsonFileLogObserver
from twisted.trial import unittest

from qvd.config import Config, ConfigError
from qvd.l7r.workers import WorkerPool
from qvd.metrics.l7r import L7RMetrics, first_process_metrics
from qvd.metrics.relay import ReportSender, WorkerReports
from qvd.metrics.server import MetricsService, announce, metrics_service
from qvd.metrics.snapshot import render, take
from qvd.stream.sockets import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class SumTests(unittest.TestCase):
    def test_first_process_serves_the_sum_and_keeps_a_gone_workers_counts(self) -> None:
        first, worker = L7RMetrics(), L7RMetrics()
        first.connects.labels("ok").inc()
        first.sessions.inc()
        worker.connects.labels("ok").inc(2)
        worker.sessions.inc(3)
        worker.phase_seconds.labels("vm_start").observe(4)
        reports = WorkerReports()
        reports.update(1, json.loads(json.dumps(take(worker.registry))))  # as the pipe carries it
        page = samples(render(first_process_metrics(first, reports)).decode())
        self.assertEqual(page[("qvd_l7r_connects_total", (("result", "ok"),))], 3)
        self.assertEqual(page[("qvd_l7r_sessions", ())], 4)
        self.assertEqual(page[("qvd_l7r_processes_up", ())], 2)
        self.assertEqual(page[("qvd_l7r_connect_phase_seconds_bucket",
                               (("le", "5.0"), ("phase", "vm_start")))], 1)

        reports.retire(1)
        page = samples(render(first_process_metrics(first, reports)).decode())
        self.assertEqual(page[("qvd_l7r_connects_total", (("result", "ok"),))], 3,
                         "a counter never goes down when a worker ends")
        self.assertEqual(page[("qvd_l7r_sessions", ())], 1, "its sessions went with it")
        self.assertEqual(page[("qvd_l7r_processes_up", ())], 1)


class WorkerReportTests(unittest.TestCase):
    def test_a_workers_report_travels_the_log_pipe_and_is_not_logged(self) -> None:
        """The worker's ReportSender logs a snapshot; its log observer (the pipe) writes
        it as JSON; the first process's relay takes it out of the log stream."""
        worker = L7RMetrics()
        worker.logins.labels("failed").inc(5)
        pipe = io.StringIO()
        observer = jsonFileLogObserver(pipe)
        globalLogPublisher.addObserver(observer)
        try:
            sender = ReportSender(worker.registry, reactor)
            sender.startService()  # reports at once
            sender.stopService()
        finally:
            globalLogPublisher.removeObserver(observer)
        published: list[dict[str, Any]] = []
        reports = WorkerReports()
        pool = WorkerPool(reactor, 1, None, publish=published.append, reports=reports)
        for line in pipe.getvalue().splitlines():
            pool.relay(1, line.encode())
        self.assertEqual(published, [])
        self.assertEqual(reports.reporting, 1)
        page = samples(render(first_process_metrics(L7RMetrics(), reports)).decode())
        self.assertEqual(page[("qvd_l7r_logins_total", (("result", "failed"),))], 5)


class ListenerTests(unittest.TestCase):
    def config(self, **values: str) -> Config:
        return Config(values)

    def test_off_by_default_and_on_loopback_when_on(self) -> None:
        self.assertIsNone(metrics_service(self.config(), "l7r", reactor, list))
        service = metrics_service(self.config(**{"l7r.metrics.port": "9101"}), "l7r", reactor,
                                  list)
        self.assertEqual((service.address, service.port_number), ("127.0.0.1", 9101))
        self.assertIn("metrics: off", announce(self.config()))
        self.assertEqual(announce(self.config(**{"hkd.metrics.port": "9102"})),
                         "HKD metrics: http://localhost:9102/metrics")

    @defer.inlineCallbacks
    def test_scraped_over_http(self) -> Generator[Any, Any, None]:
        metrics = L7RMetrics()
        metrics.spliced_bytes.labels("vm_to_client").inc(1234)
        service = MetricsService(reactor, "127.0.0.1", 0, lambda: take(metrics.registry), "L7R")
        service.startService()
        self.addCleanup(service.stopService)
        url = f"http://127.0.0.1:{service.port.getHost().port}"
        page = yield threads.deferToThread(lambda: urllib.request.urlopen(url + "/metrics").read())
        self.assertEqual(samples(page.decode())[
            ("qvd_l7r_spliced_bytes_total", (("direction", "vm_to_client"),))], 1234)
        with self.assertRaises(Exception) as raised:
            yield threads.deferToThread(lambda: urllib.request.urlopen(url + "/other"))
        self.assertEqual(raised.exception.code, 404)

    def test_a_taken_port_is_one_clear_error(self) -> None:
        port = free_port()
        first = MetricsService(reactor, "127.0.0.1", port, list, "HKD")
        first.startService()
        self.addCleanup(first.stopService)
        with self.assertRaises(ConfigError) as raised:
            MetricsService(reactor, "127.0.0.1", port, list, "HKD").startService()
        self.assertIn(f"cannot serve HKD metrics on 127.0.0.1:{port} (hkd.metrics.port)",
                      str(raised.exception))
