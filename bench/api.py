"""The administration API's ``vm_get_list`` with 10,000 VMs in QVD-DB.

    .venv/bin/python bench/api.py [--vms 10000] [--requests 3000] [--clients 4]

Starts a throw-away PostgreSQL, deploys QVD-DB, creates 100 users with 100 VMs
each (10 % running), starts one ``twistd qvd-api`` (TLS) and has ``--clients``
client processes, each on one keep-alive connection logged in as superadmin,
ask for one page of 100 VMs with a filter (``state = running``, 1,000 matches)
and the WAT's list columns, as fast as they get answers.  Yardsticks in the
same run: ``/api/info`` (no database) and the page's SQL alone (psycopg2,
same filter and page).  Prints Markdown rows for bench/RESULTS.md: requests/s,
median and p99 latency.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from db_roundtrip import start_cluster  # noqa: E402
from harness import ROOT, WAIT, certificate, median, percentile  # noqa: E402

from qvd.admin.remote import APIClient, APIUnreachable  # noqa: E402
from qvd.config import Config, parse_properties  # noqa: E402
from qvd.db import connect_sync  # noqa: E402
from qvd.db.deploy import deploy  # noqa: E402
from qvd.stream.sockets import free_port  # noqa: E402

TWISTD = "from twisted.scripts.twistd import run; run()"
FIELDS = ["id", "name", "user_name", "osf_name", "state", "user_state", "host_name", "ip",
          "blocked", "expiration_hard"]
PAGE = {"action": "vm_get_list", "filters": {"state": "running"}, "fields": FIELDS,
        "block": 100, "offset": 3, "order_by": {"field": "name"}}


def connect(conf: str) -> Any:
    with open(conf) as f:
        return connect_sync(Config(parse_properties(f.read())), "qvd-bench")


def populate(conf: str, vms: int) -> None:
    conn = connect(conf)
    deploy(conn)
    users = max(1, vms // 100)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO osfs (tenant_id, name, memory, use_overlay) VALUES"
                    " (1, 'desktop', 256, TRUE) RETURNING id")
        osf = cur.fetchone()[0]
        cur.execute("INSERT INTO hosts (name, address, frontend, backend) VALUES"
                    " ('bench-node', '127.0.0.1', TRUE, TRUE) RETURNING id")
        host = cur.fetchone()[0]
        cur.execute("INSERT INTO host_runtimes (host_id, state, blocked) VALUES"
                    " (%s, 'running', FALSE)", (host,))
        cur.execute("INSERT INTO users (tenant_id, login, password) SELECT 1, 'user-' || n,"
                    " 'x' FROM generate_series(1, %s) n", (users,))
        cur.execute(
            "INSERT INTO vms (name, user_id, osf_id, di_tag, ip, storage)"
            " SELECT 'desk-' || lpad(n::text, 5, '0'), u.id, %s, 'default',"
            " '10.' || (n / 65536) || '.' || (n / 256 %% 256) || '.' || (n %% 256), ''"
            " FROM generate_series(1, %s) n JOIN users u ON u.login = 'user-' || (n %% %s + 1)",
            (osf, vms, users))
        cur.execute("INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked, host_id)"
                    " SELECT id, CASE WHEN id %% 10 = 0 THEN 'running' ELSE 'stopped' END,"
                    " 'disconnected', FALSE, CASE WHEN id %% 10 = 0 THEN %s END FROM vms",
                    (host,))
        cur.execute("INSERT INTO vm_counters (vm_id) SELECT id FROM vms")
        cur.execute("ANALYZE")
    conn.close()


def client(url: str, ca: str, sid: str, payload: dict, count: int, queue: Any) -> None:
    api = APIClient(url, ca=ca)
    path = "/api/info" if payload is None else "/api"
    body = {} if payload is None else {**payload, "sid": sid}
    latencies = []
    api.call(body, path)
    for _ in range(count):
        started = time.perf_counter()
        answer = api.call(body, path)
        latencies.append(time.perf_counter() - started)
        if answer.get("status") != 0:
            raise RuntimeError(answer)
    queue.put(latencies)


def run(url: str, ca: str, sid: str, payload: Any, requests: int, clients: int) -> tuple:
    queue: Any = multiprocessing.Queue()
    each = requests // clients
    procs = [multiprocessing.Process(target=client, args=(url, ca, sid, payload, each, queue))
             for _ in range(clients)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    latencies = [x for _ in procs for x in queue.get(timeout=600)]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    return len(latencies) / elapsed, median(latencies) * 1000, percentile(latencies, 0.99) * 1000


def sql_yardstick(conf: str, count: int) -> tuple:
    """The page alone: the same statement the API runs, from psycopg2."""
    from qvd.api.model import VM
    from qvd.api.query import Where, list_sql
    fields = [f for f in FIELDS]
    where = Where("(vr.vm_state = %s)", ["running"], set())
    order = f"{VM.columns['name'].sql}, v.id"
    sql, params = list_sql(VM, fields, where, order, set(), 100, 200, [])
    conn = connect(conf)
    latencies = []
    with conn.cursor() as cur:
        for _ in range(count):
            started = time.perf_counter()
            cur.execute(sql, params)
            cur.fetchall()
            conn.rollback()
            latencies.append(time.perf_counter() - started)
    conn.close()
    return (len(latencies) / sum(latencies), median(latencies) * 1000,
            percentile(latencies, 0.99) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    cluster, conf = start_cluster()
    directory = tempfile.mkdtemp(prefix="qvd-bench-api-")
    process = None
    try:
        populate(conf, args.vms)
        cert, key, _ = certificate(directory)
        port = free_port()
        api_conf = os.path.join(directory, "node.conf")
        with open(conf) as f, open(api_conf, "w") as out:
            out.write(f.read() + f"api.url = https://127.0.0.1:{port}/\n"
                      f"path.api.ssl.key = {key}\npath.api.ssl.cert = {cert}\n")
        log = open(os.path.join(directory, "qvd-api.log"), "w")
        process = subprocess.Popen([sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qvd-api",
                                    "-c", api_conf], cwd=directory, stdout=log,
                                   stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT))
        url = f"https://127.0.0.1:{port}/"
        deadline = time.monotonic() + WAIT
        while True:
            try:
                answer = APIClient(url, ca=cert).call(
                    {"action": "current_admin_setup", "login": "superadmin",
                     "password": "superadmin", "tenant": "*"})
                break
            except APIUnreachable:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"qvd-api did not start: see {log.name}")
                time.sleep(0.2)
        sid = answer["sid"]
        print(f"| what ({args.vms} VMs, {args.clients} clients) | requests/s | median ms | p99 ms |")
        print("|---|---|---|---|")
        for label, payload in (("`/api/info` (no database)", None),
                               ("`vm_get_list`, 100 of 1,000 running, WAT columns", PAGE)):
            rate, mid, p99 = run(url, cert, sid, payload, args.requests, args.clients)
            print(f"| {label} | {rate:,.0f} | {mid:.1f} | {p99:.1f} |")
        rate, mid, p99 = sql_yardstick(conf, 500)
        print(f"| the page's SQL alone (psycopg2, 1 connection) | {rate:,.0f} | {mid:.1f} | {p99:.1f} |")
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        cluster.destroy()


if __name__ == "__main__":
    main()
