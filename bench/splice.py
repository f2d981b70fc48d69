"""Splice throughput and 64-byte round trips: the L7R's data path against haproxy's TLS->TCP.

    .venv/bin/python bench/splice.py [--megabytes 512] [--runs 3] [--round-trips 20000]

Needs haproxy (``apt-get install -y haproxy``; bench only).  One backend process
(bench/harness.py ``backend``) serves every path; the same blocking Python ``ssl``
client drives, in turn: the L7R splice harness (the project's TLS context and the
real ``SpliceEnd``/``join``, one process), haproxy 2.6 in ``mode tcp`` with
``bind ... ssl crt`` and ``nbthread 1`` (the same certificate), and direct TCP to
the backend as a baseline.  Each stream is a fresh connection.  Bounded: about
``runs`` x 2 x 3 transfers of ``--megabytes`` and 3 x ``--round-trips`` echoes
(under two minutes with the defaults).  Prints Markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile

from harness import (
    certificate, children, client_context, download, haproxy, median, percentile,
    negotiated, round_trips, upload,
)


def measure(name: str, port: int, context, size: int, runs: int, echoes: int) -> None:
    """One table row: best of ``runs`` per direction, latency over ``echoes`` round trips."""
    up = max(upload(port, context, size) for _ in range(runs))
    down = max(download(port, context, size) for _ in range(runs))
    times = round_trips(port, context, echoes)
    print(f"| {name} | {up:,.0f} | {down:,.0f} | {median(times) * 1e6:.0f}"
          f" | {percentile(times, 0.99) * 1e6:.0f} | {negotiated(port, context)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=512, help="per transfer (MiB)")
    parser.add_argument("--runs", type=int, default=3, help="transfers per direction")
    parser.add_argument("--round-trips", type=int, default=20000)
    args = parser.parse_args()
    size = args.megabytes << 20
    directory = tempfile.TemporaryDirectory(prefix="qvd-bench-tls-")
    cert, key, pem = certificate(directory.name)
    context = client_context(cert)
    print("| path | client->backend MB/s | backend->client MB/s | 64 B round trip median µs"
          " | p99 µs | TLS |")
    print("|---|---|---|---|---|---|")
    with children(("backend",)) as (backend,):
        with children(("splice", backend.port, cert, key)) as (splice,):
            measure("L7R splice harness (TLS -> TCP)", splice.port, context, size, args.runs,
                    args.round_trips)
        with haproxy(backend.port, pem) as (port, _):
            measure("haproxy 2.6 mode tcp (TLS -> TCP)", port, context, size, args.runs,
                    args.round_trips)
        measure("direct TCP to the backend (baseline, no TLS)", backend.port, None, size,
                args.runs, args.round_trips)


if __name__ == "__main__":
    main()
