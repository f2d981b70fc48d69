"""A real node at work, seen the way an administrator sees it: Prometheus metrics scraped
over HTTP from the L7R (two processes: the sum of both) and the HKD after real logins
and a real connect, the session's JSON log lines, and the audit rows it left."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import urllib.request
from typing import Any, Generator

import psutil
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, threads

from qvd.stream.sockets import free_port
from tests.support.node import NodeTestCase
from tests.support.paths import ROOT
from tests.support.waiting import poll_blocking

PAYLOAD = b"NXPROXY-3.5.99\n"


def page_of(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``http://127.0.0.1:<port>/metrics`` by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(page_of(port)) for s in family.samples}


def family(name: str) -> str:
    """A metric's family name, from the name of one of its samples."""
    return re.sub(r"_(total|bucket|count|sum)$", "", name)


class NodeOperationsTests(NodeTestCase):
    timeout = 150

    def setUp(self) -> None:
        super().setUp()
        self.l7r_metrics, self.hkd_metrics = free_port(), free_port()
        self.log_file = os.path.join(self.root, "log", "node.log")
        with open(self.conf, "a") as f:
            f.write(f"l7r.processes = 2\nl7r.metrics.port = {self.l7r_metrics}\n"
                    f"hkd.metrics.port = {self.hkd_metrics}\n"
                    f"log.format = json\nlog.filename = {self.log_file}\n")

    def login(self, password: str) -> tuple[int, int]:
        """(status, pid of the L7R process that served it) of one list_of_vm over TLS."""
        context = ssl.create_default_context(cafile=self.cert)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as s:
            credentials = base64.b64encode(f"alice:{password}".encode()).decode()
            s.sendall(f"GET /qvd/list_of_vm HTTP/1.1\r\nAuthorization: Basic {credentials}"
                      f"\r\n\r\n".encode())
            status = int(s.recv(4096).split()[1])
            mine = s.getsockname()[1]
            served = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == self.port
                      and c.raddr and c.raddr.port == mine and c.pid}
        return status, served.pop()

    def log_records(self) -> list[dict[str, Any]]:
        with open(self.log_file) as f:
            return [json.loads(line) for line in f]

    def explain(self, *protocols: Any) -> str:
        text = super().explain(*protocols)
        if os.path.exists(self.log_file):
            with open(self.log_file) as f:
                text += "\n--- node.log\n" + "".join(f.readlines()[-60:])
        return text

    @defer.inlineCallbacks
    def test_metrics_logs_and_audit_of_logins_and_a_session(self) -> Generator[Any, Any, None]:
        yield self.start_node()
        # logins on new connections until both L7R processes have served some
        served: set[int] = set()
        ok = failed = 0
        while len(served) < 2 or ok + failed < 6:
            self.assertLess(ok + failed, 60, "the kernel never picked one of the processes")
            wrong = (ok + failed) % 3 == 2
            status, pid = yield threads.deferToThread(self.login, "guess" if wrong else "s3cret")
            self.assertEqual(status, 401 if wrong else 200)
            failed, ok = failed + wrong, ok + (not wrong)
            served.add(pid)

        # a session: qvd-client --pipe carries the NX stream on its stdin and stdout
        client = self.client("--pipe")
        yield poll_blocking(lambda: self.runtime()["user_state"], lambda s: s == "connected",
                            90, "the client connected")
        client.transport.write(PAYLOAD)
        client.transport.closeStdin()
        yield client.ended
        self.assertEqual(client.out, b"", "nxagent says nothing before the NX handshake")
        page = yield poll_blocking(
            lambda: scrape(self.l7r_metrics),
            lambda p: p.get(("qvd_l7r_sessions_ended_total", ())) == 1 and p.get(
                ("qvd_l7r_logins_total", (("result", "ok"),))) == ok + 1,
            20, "the session's end and every login (the worker's report) in the metrics")
        expected = {
            ("qvd_l7r_processes_up", ()): 2,
            ("qvd_l7r_logins_total", (("result", "ok"),)): ok + 1,  # + the client's
            ("qvd_l7r_logins_total", (("result", "failed"),)): failed,
            ("qvd_l7r_auth_attempts_total", (("plugin", "default"),)): ok + 1 + failed,
            ("qvd_l7r_auth_successes_total", (("plugin", "default"),)): ok + 1,
            ("qvd_l7r_connects_total", (("result", "ok"),)): 1,
            ("qvd_l7r_connects_total", (("result", "failed"),)): 0,
            ("qvd_l7r_connect_seconds_count", ()): 1,
            ("qvd_l7r_sessions", ()): 0,
            ("qvd_l7r_spliced_bytes_total", (("direction", "client_to_vm"),)): len(PAYLOAD),
            ("qvd_l7r_spliced_bytes_total", (("direction", "vm_to_client"),)): 0,
        }
        for phase in ("auth", "host_assignment", "vm_start", "x_start", "nx_connect"):
            expected[("qvd_l7r_connect_phase_seconds_count", (("phase", phase),))] = 1
        self.assertEqual({key: page.get(key) for key in expected}, expected)
        self.assertGreater(page[("qvd_l7r_connect_phase_seconds_sum", (("phase", "vm_start"),))], 0)
        self.assertGreaterEqual(page[("qvd_db_pool_size", ())], 4, "two processes' pools")
        self.assertIn(("qvd_db_listen_reconnects_total", ()), page)

        hkd = yield threads.deferToThread(scrape, self.hkd_metrics)
        self.assertEqual(hkd[("qvd_hkd_vms", (("state", "running"),))], 1)
        self.assertEqual(hkd[("qvd_hkd_vms", (("state", "starting"),))], 0)
        self.assertEqual(hkd[("qvd_hkd_heavy_operations", ())], 0)
        self.assertLess(hkd[("qvd_hkd_heartbeat_age_seconds", ())], 20)
        self.assertIn(("qvd_db_statement_retries_total", ()), hkd)
        self.assertNotIn(("qvd_l7r_processes_up", ()), hkd)
        texts = yield threads.deferToThread(
            lambda: [page_of(self.l7r_metrics), page_of(self.hkd_metrics)])
        families = {f.name for text in texts for f in text_string_to_metric_families(text)}
        for document in ("grafana-dashboard.json", "operating.md"):
            with open(os.path.join(ROOT, "docs", document)) as f:
                named = set(map(family, re.findall(r"\bqvd_(?:l7r|hkd|db)_[a-z_]+", f.read())))
            self.assertEqual(named - families, set(), f"docs/{document} names what is not served")

        records = self.log_records()
        start, = [r for r in records if r["message"].startswith("session start:")]
        end, = [r for r in records if r["message"].startswith("session end:")]
        self.assertEqual((start["login"], start["vm_id"], start["vm_name"], start["client"]),
                         ("alice", self.vm_id, "desk", "127.0.0.1"))
        self.assertEqual((end["login"], end["vm_id"], end["client"], end["bytes_from_client"],
                          end["bytes_to_client"], end["closed_by"]),
                         ("alice", self.vm_id, "127.0.0.1", len(PAYLOAD), 0, "client"))
        self.assertGreater(end["seconds"], 0)
        self.assertTrue(any("worker 0" in (r["system"] or "") for r in records),
                        "the worker's events reach the first process's log")

        rows = yield poll_blocking(  # written in batches, off the request path
            lambda: self.db.query("SELECT action, status, object_name, arguments, source, ip"
                                  " FROM log WHERE source = 'L7R' ORDER BY id"),
            lambda rows: len(rows) == ok + 1 + failed + 2, 10, "the L7R's audit rows")
        logins = [r for r in rows if r[0] == "user_login"]
        self.assertEqual(sorted(r[1] for r in logins), [0] * (ok + 1) + [3200] * failed)
        self.assertEqual({(r[2], r[4], r[5]) for r in logins}, {("alice", "L7R", "127.0.0.1")})
        self.assertIn("wrong password", [r for r in logins if r[1]][0][3])
        connects = [(r[0], r[1], r[2], json.loads(r[3])) for r in rows if r[0] != "user_login"]
        self.assertEqual([c[:3] for c in connects],
                         [("vm_connect", 0, "desk"), ("vm_disconnect", 0, "desk")])
        self.assertEqual(connects[1][3]["bytes_from_client"], len(PAYLOAD))
        self.assertEqual(connects[1][3]["user"], "alice")
        everything = repr(rows)
        self.assertNotIn("s3cret", everything)
        self.assertNotIn("guess", everything)
