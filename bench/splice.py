"""Splice throughput and 64-byte round trips: the L7R's data path against haproxy's TLS->TCP.

    .venv/bin/python bench/splice.py [--megabytes 512] [--runs 3] [--round-trips 20000]
        [--no-pin]

Needs haproxy (``apt-get install -y haproxy``; bench only).  One backend process
(bench/harness.py ``backend``) serves every path; the same blocking Python ``ssl``
client drives:

* a real L7R session: ``twistd -n qvd-l7r`` on a private PostgreSQL with a
  deployed QVD-DB whose VMs are ``running`` with the backend as their NX port
  (their VMA is the FAKE VMA of bench/harness.py ``fakes``); each stream is a
  new TLS connection, Basic auth and ``connect_to_vm`` to its ``101``, then the
  stream itself through the L7R's splice;
* the L7R splice harness: the same TLS context, transports and ``SpliceEnd``
  without the HTTP steps before the 101;
* haproxy 2.6 in ``mode tcp`` with ``bind ... ssl crt`` and ``nbthread 1`` (the
  same certificate);
* direct TCP to the backend, as a baseline.

All of them run at once and are measured in turns (each transfer in turn, then
``--round-trips`` echoes in 20 rounds, each path's round on one open stream in
turn), so that other work on the machine weighs on every path alike.  With two
cores or more (unless ``--no-pin``) the client, the backend, PostgreSQL and the
fakes run on the first core and every proxy on the second.  Bounded: ``runs`` x
2 x 4 transfers of ``--megabytes`` and 4 x ``--round-trips`` echoes.  Prints
Markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import os
import shutil
import tempfile
from typing import Iterator, Optional

from connect_rate import L7R, populate
from db_roundtrip import start_cluster
from harness import (
    LOAD_CPU, PROXY_CPU, Opener, certificate, children, client_context, download, echo_stream,
    haproxy, median, negotiated, open_stream, percentile, pin, pin_cluster, round_trips, session,
    upload,
)

ROUNDS = 20


@contextlib.contextmanager
def real_l7r(directory: str, cert: str, key: str, backend: int, context,
             load_cpu: Optional[int], proxy_cpu: Optional[int]) -> Iterator[Opener]:
    """A real ``twistd qvd-l7r`` (its QVD-DB made and removed here): an opener of
    sessions through it."""
    cluster, conf = start_cluster()
    pin_cluster(cluster.datadir, load_cpu)
    try:
        with open(conf, "a") as f:
            f.write(f"nodename = bench-node\nl7r.address = 127.0.0.1\n"
                    f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n")
        with children(("fakes",), cpu=load_cpu) as (fakes,):
            # 8 users x 2 VMs: a VM's session is released by the time its turn comes again
            pairs = populate(conf, 8, fakes.port, backend)
            turns = itertools.cycle([(login, int(vm)) for login, vms in pairs
                                     for vm in vms.split(":")])
            l7r = L7R(conf, directory, 1, cpu=proxy_cpu)
            try:
                yield lambda: session(l7r.port, context, *next(turns))
            finally:
                l7r.stop()
    finally:
        cluster.destroy()
        shutil.rmtree(os.path.dirname(conf), ignore_errors=True)


def measure(paths: list[tuple[str, Opener]], size: int, runs: int, echoes: int) -> None:
    """One row per path: best of ``runs`` per direction, latency over ``echoes`` round
    trips; every measurement taken in turn over the paths."""
    up: dict[str, list[float]] = {name: [] for name, _ in paths}
    down: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(runs):
        for name, opener in paths:
            up[name].append(upload(opener, size))
            down[name].append(download(opener, size))
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    streams = {name: echo_stream(opener) for name, opener in paths}
    try:
        for _ in range(ROUNDS):
            for name, _ in paths:
                times[name] += round_trips(streams[name], max(1, echoes // ROUNDS))
    finally:
        for stream in streams.values():
            stream.close()
    for name, opener in paths:
        print(f"| {name} | {max(up[name]):,.0f} | {max(down[name]):,.0f}"
              f" | {median(times[name]) * 1e6:.0f} | {percentile(times[name], 0.99) * 1e6:.0f}"
              f" | {negotiated(opener)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=512, help="per transfer (MiB)")
    parser.add_argument("--runs", type=int, default=3, help="transfers per direction")
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--no-pin", action="store_true", help="let every process run anywhere")
    args = parser.parse_args()
    load_cpu, proxy_cpu = (None, None) if args.no_pin else (LOAD_CPU, PROXY_CPU)
    directory = tempfile.mkdtemp(prefix="qvd-bench-splice-")
    cert, key, pem = certificate(directory)
    context = client_context(cert)
    pin(os.getpid(), load_cpu)  # the client
    print("| path | client->backend MB/s | backend->client MB/s | 64 B round trip median µs"
          " | p99 µs | TLS |")
    print("|---|---|---|---|---|---|")
    try:
        with contextlib.ExitStack() as running:
            (backend,) = running.enter_context(children(("backend",), cpu=load_cpu))
            l7r = running.enter_context(
                real_l7r(directory, cert, key, backend.port, context, load_cpu, proxy_cpu))
            (splice,) = running.enter_context(
                children(("splice", backend.port, cert, key), cpu=proxy_cpu))
            port, _ = running.enter_context(haproxy(backend.port, pem, cpu=proxy_cpu))
            measure([
                ("L7R, real session (twistd qvd-l7r, TLS -> TCP after 101)", l7r),
                ("L7R splice harness (TLS -> TCP)",
                 functools.partial(open_stream, splice.port, context)),
                ("haproxy 2.6 mode tcp (TLS -> TCP)", functools.partial(open_stream, port, context)),
                ("direct TCP to the backend (baseline, no TLS)",
                 functools.partial(open_stream, backend.port, None)),
            ], args.megabytes << 20, args.runs, args.round_trips)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
