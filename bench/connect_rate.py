"""Full connects (and pings) per second through ``twistd qvd-l7r``, 1..n SO_REUSEPORT processes.

    .venv/bin/python bench/connect_rate.py [--connects 3000] [--concurrency 32]
        [--processes 1,2] [--modes connect,ping] [--profile FILE]

A private PostgreSQL (as db_roundtrip.py), a deployed QVD-DB with host
``bench-node`` (``running``) and ``--concurrency`` users, each with two VMs
already ``running`` on it; the VMs' VMA and NX ports are a FAKE VMA (SimpleRPC
``x_start`` -> ``"starting"``, ``x_state`` -> ``"listening"``) and a FAKE NX
port (accepts, discards) in one process (bench/harness.py ``fakes``), since no
nxagent can answer hundreds of sessions a second.  The L7R is the real
``twistd -n qvd-l7r`` over TLS with ``l7r.processes`` = each of ``--processes``.

``connect``: new TLS connection, Basic auth, ``list_of_vm``, ``connect_to_vm``
(102s, 101), close; each client thread takes turns on its two VMs.  ``ping``:
new TLS connection, ``GET /qvd/ping``, close.  Clients: two processes of
threads with blocking Python ``ssl`` sockets.  Bounded: ``--connects`` per
mode and process count (about a minute each with the defaults at the rates
seen).  ``--profile FILE`` runs the single-process L7R under cProfile and
prints where its time goes.  CPU columns are percent of one core (the machine
column adds up every process: clients, PostgreSQL, fakes, L7R).  Prints Markdown
rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

import psutil

from db_roundtrip import start_cluster
from harness import (
    LOAD_CPU, PROXY_CPU, ROOT, WAIT, certificate, children, median, percentile, pin, pin_cluster,
    run_children,
)

from qvd.admin.cli import main as qa
from qvd.config import Config, parse_properties
from qvd.db import connect_sync
from qvd.db.deploy import deploy
from qvd.db.oneshot import query_once
from qvd.pgcluster import port_in_use
from qvd.stream.sockets import free_port
from tests.support.processes import stop_popen

TWISTD = "from twisted.scripts.twistd import run; run()"
CLIENT_PROCESSES = 2


def sql(conf: str, statement: str, params: tuple = ()) -> list[tuple]:
    """One statement on the QVD-DB of node.conf ``conf``; its rows if any."""
    with open(conf) as f:
        config = Config(parse_properties(f.read()))
    return query_once(config, statement, params, "qvd-bench")


def populate(conf: str, users: int, vma_port: int, nx_port: int) -> list[tuple[str, str]]:
    """Host, users and running VMs; (login, ``vm:vm``) per client thread."""
    with open(conf) as f:
        conn = connect_sync(Config(parse_properties(f.read())))
    deploy(conn)
    conn.close()
    lines = ["host new name=bench-node,address=127.0.0.1", "osf new name=o"]
    for i in range(users):
        lines += [f"user new login=u{i},password=p", f"vm new name=v{i}a,user=u{i},osf=o",
                  f"vm new name=v{i}b,user=u{i},osf=o"]
    with open(os.devnull, "w") as devnull:
        for line in lines:
            if qa(["-c", conf] + line.split(), devnull) != 0:
                raise RuntimeError(f"qa {line} failed")
    host_id = sql(conf, "SELECT id FROM hosts WHERE name = 'bench-node'")[0][0]
    sql(conf, "UPDATE host_runtimes SET state = 'running', ok_ts = now()")
    sql(conf, "UPDATE vm_runtimes SET vm_state = 'running', host_id = %s,"
              " vm_address = '127.0.0.1', vm_vma_port = %s, vm_x_port = %s",
        (host_id, vma_port, nx_port))
    rows = sql(conf, "SELECT u.login, string_agg(v.id::text, ':' ORDER BY v.id) FROM vms v"
                     " JOIN users u ON u.id = v.user_id GROUP BY u.login ORDER BY u.login")
    return [(login, vms) for login, vms in rows]


class L7R:
    """``twistd -n qvd-l7r`` (and its SO_REUSEPORT workers), log in ``directory``."""

    def __init__(self, conf: str, directory: str, processes: int, profile: Optional[str] = None,
                 cpu: Optional[int] = None):
        self.port = free_port()
        path = os.path.join(directory, f"l7r-{processes}.conf")
        with open(conf) as f, open(path, "w") as out:
            out.write(f.read() + f"l7r.port = {self.port}\nl7r.processes = {processes}\n")
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile="]
        if profile:
            argv += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        self.log = open(os.path.join(directory, f"l7r-{processes}.log"), "w")
        self.process = subprocess.Popen(argv + ["qvd-l7r", "--config", path], cwd=directory,
                                        env=dict(os.environ, PYTHONPATH=ROOT),
                                        stdout=self.log, stderr=subprocess.STDOUT)
        pin(self.process.pid, cpu)  # before it starts its workers: they inherit it
        deadline = time.monotonic() + WAIT
        while not (port_in_use(self.port) and len(self.tree()) == processes):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"qvd-l7r did not start: see {self.log.name}")
            time.sleep(0.1)

    def tree(self) -> list[psutil.Process]:
        main = psutil.Process(self.process.pid)
        return [main] + [p for p in main.children(recursive=True) if "qvd-l7r" in p.cmdline()]

    def cpu_seconds(self) -> list[float]:
        """CPU seconds of each process, the first one first."""
        return [sum(p.cpu_times()[:2]) for p in self.tree()]

    def stop(self) -> None:
        stop_popen(self.process, 30)
        self.log.close()


def run_clients(port: int, cert: str, mode: str, pairs: list[tuple[str, str]],
                count: int, cpu: Optional[int]) -> tuple[list[float], int, float]:
    """(latencies, failures, seconds) of ``count`` ``mode``s per client thread."""
    split = [pairs[i::CLIENT_PROCESSES] for i in range(CLIENT_PROCESSES)]
    specs = [("clients", port, cert, mode, ",".join(p[0] for p in part),
              ",".join(p[1] for p in part), count) for part in split if part]
    return run_children(specs, cpu)


def measure(l7r: L7R, cert: str, mode: str, processes: int, pairs: list[tuple[str, str]],
            connects: int, cpu: Optional[int]) -> None:
    """One row; the clients on ``cpu`` (None: anywhere)."""
    run_clients(l7r.port, cert, mode, pairs, 3, cpu)  # warm-up: connections, caches
    count = max(1, connects // len(pairs))
    cpu_before, machine = l7r.cpu_seconds(), busy_seconds()
    times, failures, elapsed = run_clients(l7r.port, cert, mode, pairs, count, cpu)
    spent = [after - before for before, after in zip(cpu_before, l7r.cpu_seconds())]
    machine = (busy_seconds() - machine) / elapsed * 100
    shares = " + ".join(f"{s / elapsed * 100:.0f}" for s in spent)
    print(f"| {mode} | {processes} | {len(pairs)} | {len(times):,} | {failures} |"
          f" {len(times) / elapsed:,.0f} | {median(times) * 1e3:.1f} |"
          f" {percentile(times, 0.99) * 1e3:.1f} | {shares} |"
          f" {sum(spent) / max(1, len(times)) * 1e3:.2f} | {machine:.0f} |", flush=True)


def busy_seconds() -> float:
    """CPU seconds the whole machine (clients, PostgreSQL, fakes, L7R) has been busy."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


def print_profile(path: str) -> None:
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    print("\n```\n" + out.getvalue().split("\n", 4)[-1].strip() + "\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connects", type=int, default=3000, help="per mode and process count")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads")
    parser.add_argument("--processes", default="1,2", help="l7r.processes values")
    parser.add_argument("--modes", default="connect,ping")
    parser.add_argument("--profile", help="cProfile the 1-process L7R into this file")
    parser.add_argument("--no-pin", action="store_true", help="let every process run anywhere")
    args = parser.parse_args()
    load_cpu, proxy_cpu = (None, None) if args.no_pin else (LOAD_CPU, PROXY_CPU)
    pin(os.getpid(), load_cpu)
    directory = tempfile.mkdtemp(prefix="qvd-bench-connect-")
    cert, key, _ = certificate(directory)
    cluster, conf = start_cluster()
    pin_cluster(cluster.datadir, load_cpu)
    try:
        with open(conf, "a") as f:
            f.write(f"nodename = bench-node\nl7r.address = 127.0.0.1\n"
                    f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n"
                    # no HKD runs here: its one heartbeat (populate) must not go stale
                    "internal.hkd.agent.ticker.timeout = 86400\n")
        with children(("fakes",), cpu=load_cpu) as (fakes,):
            pairs = populate(conf, args.concurrency, fakes.port, int(fakes.ports[1]))
            print("| mode | L7R processes | client threads | done | failed | per second"
                  " | median ms | p99 ms | L7R CPU % | L7R CPU ms each | machine CPU % |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for processes in map(int, args.processes.split(",")):
                profile = args.profile if processes == 1 else None
                l7r = L7R(conf, directory, processes, profile, proxy_cpu)
                try:
                    for mode in args.modes.split(","):
                        measure(l7r, cert, mode, processes, pairs, args.connects, load_cpu)
                finally:
                    l7r.stop()
                if profile:
                    print_profile(profile)
    finally:
        cluster.destroy()
        shutil.rmtree(os.path.dirname(conf), ignore_errors=True)  # start_cluster's node.conf
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
