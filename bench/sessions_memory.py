"""Memory per concurrent spliced session in one process: the L7R (a real ``twistd qvd-l7r``
and the splice harness) vs haproxy.

    .venv/bin/python bench/sessions_memory.py [--sessions N] [--real-sessions 4000]
        [--parallel 100]

Needs haproxy (``apt-get install -y haproxy``; bench only).  The proxy process sits
between a load generator process (``holder``: N TLS sessions, each checked with one
64-byte echo, then held open) and the echo backend process, so only the proxy's own
memory is measured: its RSS (psutil) before the sessions and once all are
established, divided by N.  The proxies:

* a real ``twistd -n qvd-l7r`` on a private PostgreSQL (as connect_rate.py): each
  session is a new TLS connection, Basic auth and ``connect_to_vm`` to its own VM
  (``running``, FAKE VMA, the backend as its NX port) up to the 101, then the echo; 50
  sessions opened and closed first, so that what a process allocates once (imports
  run late, pools, caches) is not counted per session;
* the L7R splice harness of bench/harness.py (the same transports and splice, no HTTP);
* haproxy ``nbthread 1``.

Each session costs a proxy two sockets, so N defaults to 10,000 or what
``RLIMIT_NOFILE``'s hard limit allows; the real L7R's rows need one VM each, so its
count is separate (``--real-sessions``, 0 to skip).  Bounded by the handshakes (about a
minute per proxy for 10,000 sessions) and a 300 s timeout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import psutil

from connect_rate import L7R, populate
from db_roundtrip import start_cluster
from harness import Child, certificate, children, haproxy, max_sessions

LIMIT = 300.0
WARM_UP = 50


def held(proxy_pid: int, port: int, cert: str, sessions: int, parallel: int,
         vms: str = "") -> tuple[int, int]:
    """(RSS bytes before, after ``sessions`` sessions through the proxy on ``port``)."""
    process = psutil.Process(proxy_pid)
    before = process.memory_info().rss
    holder = Child("holder", port, cert, sessions, parallel, vms)
    try:
        holder.wait_line("held", LIMIT)
        time.sleep(1)  # let the proxy finish what the last echoes left in flight
        return before, process.memory_info().rss
    finally:
        holder.process.stdin.close()
        holder.stop()


def row(name: str, sessions: int, before: int, after: int) -> None:
    print(f"| {name} | {sessions:,} | {before / 2**20:,.1f} | {after / 2**20:,.1f}"
          f" | {(after - before) / sessions / 1024:,.1f} |", flush=True)


def real_l7r(directory: str, cert: str, key: str, backend: int, sessions: int,
             parallel: int) -> None:
    """The row of a real ``twistd qvd-l7r`` (its QVD-DB made and removed here)."""
    cluster, conf = start_cluster()
    try:
        with open(conf, "a") as f:
            f.write(f"nodename = bench-node\nl7r.address = 127.0.0.1\n"
                    f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n")
        with children(("fakes",)) as (fakes,):
            pairs = populate(conf, (sessions + WARM_UP + 1) // 2, fakes.port, backend)
            turns = [f"{login} {vm}\n" for login, vms in pairs for vm in vms.split(":")]
            warm, measured = (os.path.join(directory, f"{name}.vms") for name in ("warm", "vms"))
            with open(warm, "w") as f:
                f.writelines(turns[:WARM_UP])
            with open(measured, "w") as f:
                f.writelines(turns[WARM_UP:WARM_UP + sessions])
            l7r = L7R(conf, directory, 1)
            try:
                held(l7r.process.pid, l7r.port, cert, WARM_UP, parallel, warm)
                row("L7R, real sessions (twistd qvd-l7r, TLS -> TCP after 101)", sessions,
                    *held(l7r.process.pid, l7r.port, cert, sessions, parallel, measured))
            finally:
                l7r.stop()
    finally:
        cluster.destroy()
        shutil.rmtree(os.path.dirname(conf), ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=max_sessions())
    parser.add_argument("--real-sessions", type=int, default=4000)
    parser.add_argument("--parallel", type=int, default=100, help="handshakes in flight")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="qvd-bench-memory-")
    cert, key, pem = certificate(directory)
    print("| proxy process | sessions | RSS before MiB | RSS with sessions MiB | KiB per session |")
    print("|---|---|---|---|---|")
    try:
        with children(("backend",)) as (backend,):
            if args.real_sessions:
                real_l7r(directory, cert, key, backend.port, args.real_sessions, args.parallel)
            with children(("splice", backend.port, cert, key)) as (splice,):
                row("L7R splice harness (TLS -> TCP)", args.sessions,
                    *held(splice.pid, splice.port, cert, args.sessions, args.parallel))
            with haproxy(backend.port, pem) as (port, proxy):
                row("haproxy 2.6 mode tcp (TLS -> TCP)", args.sessions,
                    *held(proxy.pid, port, cert, args.sessions, args.parallel))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
