"""Memory per concurrent spliced session in one process: the L7R splice harness vs haproxy.

    .venv/bin/python bench/sessions_memory.py [--sessions N] [--parallel 100]

Needs haproxy (``apt-get install -y haproxy``; bench only).  The proxy process
(the L7R splice harness of bench/harness.py, then haproxy ``nbthread 1``) sits
between a load generator process (``holder``: N TLS sessions, each checked with
one 64-byte echo, then held open) and the echo backend process, so only the
proxy's own memory is measured: its RSS (psutil) before the sessions and once
all are established, divided by N.  Each session costs the proxy two sockets,
so N defaults to 10,000 or what ``RLIMIT_NOFILE``'s hard limit allows.  Bounded
by the handshakes (about a minute per proxy for 10,000 sessions) and a 300 s timeout.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import psutil

from harness import Child, certificate, children, haproxy, max_sessions

LIMIT = 300.0


def held(proxy_pid: int, port: int, cert: str, sessions: int, parallel: int) -> tuple[int, int]:
    """(RSS bytes before, after ``sessions`` sessions through the proxy on ``port``)."""
    process = psutil.Process(proxy_pid)
    before = process.memory_info().rss
    holder = Child("holder", port, cert, sessions, parallel)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=max_sessions())
    parser.add_argument("--parallel", type=int, default=100, help="handshakes in flight")
    args = parser.parse_args()
    directory = tempfile.TemporaryDirectory(prefix="qvd-bench-tls-")
    cert, key, pem = certificate(directory.name)
    print("| proxy process | sessions | RSS before MiB | RSS with sessions MiB | KiB per session |")
    print("|---|---|---|---|---|")
    with children(("backend",)) as (backend,):
        with children(("splice", backend.port, cert, key)) as (splice,):
            row("L7R splice harness (TLS -> TCP)", args.sessions,
                *held(splice.pid, splice.port, cert, args.sessions, args.parallel))
        with haproxy(backend.port, pem) as (port, proxy):
            row("haproxy 2.6 mode tcp (TLS -> TCP)", args.sessions,
                *held(proxy.pid, port, cert, args.sessions, args.parallel))


if __name__ == "__main__":
    main()
