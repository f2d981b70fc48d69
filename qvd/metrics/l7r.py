"""The L7R's metrics (one registry per L7R process; the first process serves the sum).

Counters are incremented where a login, a connect or a session ends, never
per request chunk or per spliced byte: the bytes of a session are read from
the kernel when it ends (``qvd.stream.tcpinfo``).  Every name is listed with
its meaning in ``docs/operating.md``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from qvd.metrics.relay import WorkerReports
from qvd.metrics.snapshot import Snapshot, merge, take

PHASES = ("auth", "host_assignment", "vm_start", "x_start", "nx_connect")
# seconds: a login is milliseconds, a VM boot or an X session start tens of seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


class L7RMetrics:
    """One L7R process's registry and the instruments the L7R's code updates."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connects = Counter("qvd_l7r_connects", "connect_to_vm requests by result.",
                                ["result"], registry=r)
        self.connect_failures = Counter("qvd_l7r_connect_failures",
                                        "Failed connect_to_vm requests by reason.",
                                        ["reason"], registry=r)
        self.connect_seconds = Histogram("qvd_l7r_connect_seconds",
                                         "Successful connect_to_vm requests, request to 101.",
                                         buckets=BUCKETS, registry=r)
        self.phase_seconds = Histogram("qvd_l7r_connect_phase_seconds",
                                       "Time spent in each phase of connect_to_vm.",
                                       ["phase"], buckets=BUCKETS, registry=r)
        self.logins = Counter("qvd_l7r_logins",
                              "Authentications (a new Authorization on a connection) by result.",
                              ["result"], registry=r)
        self.auth_attempts = Counter("qvd_l7r_auth_attempts",
                                     "Credentials checked by each authentication plugin"
                                     " (plugin 'token': Bearer tokens).", ["plugin"], registry=r)
        self.auth_successes = Counter("qvd_l7r_auth_successes",
                                      "Credentials each authentication plugin accepted.",
                                      ["plugin"], registry=r)
        self.auth_throttled = Counter("qvd_l7r_auth_throttled",
                                      "Logins refused unchecked by the brute-force throttle,"
                                      " by what was locked (address or login).",
                                      ["scope"], registry=r)
        self.spliced_bytes = Counter("qvd_l7r_spliced_bytes",
                                     "NX bytes carried by ended sessions, by direction.",
                                     ["direction"], registry=r)
        self.sessions = Gauge("qvd_l7r_sessions", "Spliced sessions held now.", registry=r)
        self.sessions_ended = Counter("qvd_l7r_sessions_ended",
                                      "Spliced sessions that ended.", registry=r)
        for result in ("ok", "failed"):
            self.connects.labels(result)
        for result in ("ok", "failed", "throttled"):
            self.logins.labels(result)
        for direction in ("client_to_vm", "vm_to_client"):
            self.spliced_bytes.labels(direction)


def processes_up(count: int) -> list[dict[str, Any]]:
    """``qvd_l7r_processes_up`` as a snapshot family (served by the first process only)."""
    return [{"name": "qvd_l7r_processes_up", "type": "gauge",
             "help": "L7R processes serving the port: the first and its reporting workers.",
             "samples": [["qvd_l7r_processes_up", {}, count]]}]


def first_process_metrics(metrics: L7RMetrics, reports: WorkerReports) -> Snapshot:
    """What the first L7R process serves: its own metrics, its workers' and how many of
    its processes are up."""
    return merge([take(metrics.registry), *reports.snapshots(),
                  processes_up(1 + reports.reporting)])
