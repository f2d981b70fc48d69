"""Round trips per second through qvd.db.pool.Database against a private PostgreSQL.

    .venv/bin/python bench/db_roundtrip.py [--queries 20000] [--concurrency 32]

Starts a throw-away cluster (as ``postgres`` when run as root), deploys QVD-DB,
creates one VM and then reads its ``vm_runtimes`` row the way the L7R polls it,
for each pool size, with ``--concurrency`` requests in flight.  Prints one
Markdown table row per pool size, for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from qvd.admin.cli import main as qa  # noqa: E402
from qvd.config import Config, parse_properties  # noqa: E402
from qvd.db import connect_sync  # noqa: E402
from qvd.db.deploy import deploy  # noqa: E402
from qvd.db.pool import Database  # noqa: E402
from qvd.pgcluster import LocalCluster  # noqa: E402
from qvd.stream.sockets import free_port  # noqa: E402

POLL = "SELECT vm_state, user_state, user_cmd FROM vm_runtimes WHERE vm_id = %s"


def start_cluster() -> tuple[LocalCluster, str]:
    root = tempfile.mkdtemp(prefix="qvd-bench-pg-")
    os.chmod(root, 0o755)
    cluster = LocalCluster(os.path.join(root, "cluster"), free_port())
    cluster.init()
    cluster.mark_temporary()
    cluster.start()
    cluster.ensure_role_and_database("qvd", "bench", "qvd")
    conf = os.path.join(root, "node.conf")
    with open(conf, "w") as f:
        f.write(f"database.host = 127.0.0.1\ndatabase.port = {cluster.port}\n"
                "database.password = bench\n")
    return cluster, conf


@defer.inlineCallbacks
def measure(reactor, conf: str, pool_size: int, queries: int, concurrency: int):
    with open(conf) as f:
        text = f.read()
    config = Config(parse_properties(text + f"internal.database.pool.size = {pool_size}\n"))
    db = Database(config, "qvd-bench")
    yield db.start()
    vm_id = (yield db.run_query("SELECT min(id) FROM vms"))[0][0]
    remaining = iter(range(queries))

    @defer.inlineCallbacks
    def worker():
        for _ in remaining:
            yield db.run_query(POLL, (vm_id,))

    started = time.perf_counter()
    yield defer.gatherResults([worker() for _ in range(concurrency)], consumeErrors=True)
    elapsed = time.perf_counter() - started
    yield db.close()
    return queries / elapsed


@defer.inlineCallbacks
def run_all(reactor, conf: str, sizes: list[int], queries: int, concurrency: int):
    print("| pool size | in flight | queries | round trips/s |")
    print("|---|---|---|---|")
    for size in sizes:
        rate = yield measure(reactor, conf, size, queries, concurrency)
        print(f"| {size} | {concurrency} | {queries} | {rate:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool-sizes", default="1,2,4")
    args = parser.parse_args()
    cluster, conf = start_cluster()
    try:
        with open(conf) as f:
            conn = connect_sync(Config(parse_properties(f.read())))
        deploy(conn)
        conn.close()
        for line in ("osf new name=o", "user new login=u,password=p",
                     "vm new name=v,user=u,osf=o"):
            qa(["-c", conf] + line.split(), open(os.devnull, "w"))
        sizes = [int(s) for s in args.pool_sizes.split(",")]
        task.react(run_all, (conf, sizes, args.queries, args.concurrency))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
