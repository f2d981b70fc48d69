"""LDAP logins per second through one L7R process, next to the raw bind rate of the same slapd.

    .venv/bin/python bench/ldap_logins.py [--logins 3000] [--concurrency 32]

One run, one machine, one slapd (Debian's, started by ``tests/support/slapd.py`` on
loopback with ``--concurrency`` extra people ``ou=People``), one private PostgreSQL
(as db_roundtrip.py) with host ``bench-node`` and a QVD user per person:

- ``bind``: the yardstick.  Client threads (two processes, ``--concurrency`` threads
  in all, like the L7R rows) each keep an ldap3 connection and bind as their person
  over and over: the directory's raw simple-bind rate for this client.
- ``search+bind``: the same, with the search for the entry before each bind (what one
  ``ldap`` plugin login asks of the directory).
- ``L7R login, ldap``: ``twistd -n qvd-l7r`` (one process, TLS) with ``l7r.auth.plugins =
  ldap`` and a service account (``auth.ldap.binddn``); each client thread does a new TLS
  connection, Basic auth as its person, ``list_of_vm``, close (bench/harness.py ``list``).
- ``L7R login, default``: the same logins checked by the ``default`` plugin (the users
  get the same password in QVD-DB): the L7R's cost of a login without a directory.

Bounded: ``--logins`` per row.  Prints Markdown rows for bench/RESULTS.md, with the
L7R row's ratio to the ``bind`` row (DESIGN.md's target: >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

from connect_rate import L7R, busy_seconds, sql
from db_roundtrip import start_cluster
from harness import certificate, median, percentile, run_children

from qvd.admin.cli import main as qa
from qvd.config import Config, parse_properties
from qvd.db import connect_sync
from qvd.db.deploy import deploy
from tests.support.slapd import PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd, person

CLIENT_PROCESSES = 2
PASSWORD = "bench-pw"


def people(count: int) -> list[str]:
    return [f"bench{i}" for i in range(count)]


def populate(conf: str, logins: list[str], directory: Slapd) -> None:
    with open(conf) as f:
        conn = connect_sync(Config(parse_properties(f.read())))
    deploy(conn)
    conn.close()
    lines = ["host new name=bench-node,address=127.0.0.1", "osf new name=o"]
    lines += [f"user new login={login}" for login in logins]
    lines += [f"vm new name=v,user={login},osf=o" for login in logins]
    settings = {"l7r.auth.plugins": "ldap", "auth.ldap.host": directory.url,
                "auth.ldap.base": PEOPLE, "auth.ldap.binddn": SERVICE_DN,
                "auth.ldap.bindpass": SERVICE_PASSWORD}
    lines += [f"config set key={key},value={value}" for key, value in settings.items()]
    with open(os.devnull, "w") as devnull:
        for line in lines:
            words = line.split(" ", 2)
            if qa(["-c", conf] + words[:2] + [words[2]], devnull) != 0:
                raise RuntimeError(f"qa {line} failed")
    sql(conf, "UPDATE host_runtimes SET state = 'running'")


def split(items: list[str]) -> list[list[str]]:
    parts = [items[i::CLIENT_PROCESSES] for i in range(CLIENT_PROCESSES)]
    return [part for part in parts if part]


def row(what: str, threads: int, times: list[float], failures: int, elapsed: float,
        machine: float, yardstick: float = 0.0) -> float:
    rate = len(times) / elapsed
    ratio = f"{rate / yardstick:.2f}" if yardstick else "1 (yardstick)" if what == "bind" else ""
    print(f"| {what} | {threads} | {len(times):,} | {failures} | {rate:,.0f} |"
          f" {median(times) * 1e3:.1f} | {percentile(times, 0.99) * 1e3:.1f} |"
          f" {machine:.0f} | {ratio} |", flush=True)
    return rate


def l7r_logins(conf: str, work: str, cert: str, logins: list[str], count: int, plugin: str,
               yardstick: float) -> float:
    """One L7R row (a new one-process ``twistd qvd-l7r``); its CPU % of a core."""
    l7r = L7R(conf, work, 1, None)
    try:
        specs = [("clients", l7r.port, cert, "list",
                  ",".join(f"{login}:{PASSWORD}" for login in part),
                  ",".join("0" for _ in part), count) for part in split(logins)]
        run_children([(*s[:6], 3) for s in specs])  # warm-up: the plugin's connections
        machine, cpu = busy_seconds(), sum(l7r.cpu_seconds())
        times, failures, elapsed = run_children(specs)
        if not times:
            with open(l7r.log.name) as f:
                raise RuntimeError(f"every L7R login failed; its log ends:\n{f.read()[-3000:]}")
        row(f"L7R login, {plugin}", len(logins), times, failures, elapsed,
            (busy_seconds() - machine) / elapsed * 100, yardstick)
        return (sum(l7r.cpu_seconds()) - cpu) / elapsed * 100
    finally:
        l7r.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=3000, help="per row")
    parser.add_argument("--concurrency", type=int, default=32, help="client threads")
    args = parser.parse_args()
    logins = people(args.concurrency)
    directory = Slapd(extra_ldif="".join(person(login, PEOPLE, 20000 + i, password=PASSWORD)
                                         for i, login in enumerate(logins))).start()
    work = tempfile.mkdtemp(prefix="qvd-bench-ldap-")
    cert, key, _ = certificate(work)
    cluster, conf = start_cluster()
    try:
        with open(conf, "a") as f:
            f.write(f"nodename = bench-node\nl7r.address = 127.0.0.1\n"
                    f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n")
        populate(conf, logins, directory)
        count = max(1, args.logins // len(logins))
        print("| what | client threads | done | failed | per second | median ms | p99 ms"
              " | machine CPU % | × bind rate |")
        print("|---|---|---|---|---|---|---|---|---|")
        yardstick = 0.0
        for mode in ("bind", "search+bind"):
            specs = [("directory", directory.url, mode,
                      ";".join(f"uid={login},{PEOPLE}|{PASSWORD}" for login in part), count)
                     for part in split(logins)]
            run_children([(*s[:4], 3) for s in specs])  # warm-up
            machine = busy_seconds()
            times, failures, elapsed = run_children(specs)
            rate = row(mode, len(logins), times, failures, elapsed,
                       (busy_seconds() - machine) / elapsed * 100)
            yardstick = yardstick or rate
        cpu = [l7r_logins(conf, work, cert, logins, count, "ldap", yardstick)]
        # the same logins checked by the default plugin: what the L7R costs without LDAP
        with open(os.devnull, "w") as devnull:
            for line in (["user", "set", f"password={PASSWORD}"],
                         ["config", "set", "key=l7r.auth.plugins", "default"]):
                qa(["-c", conf] + line, devnull)
        cpu.append(l7r_logins(conf, work, cert, logins, count, "default (QVD-DB password)",
                              yardstick))
        print(f"\nL7R process CPU, % of a core: {cpu[0]:.0f} (ldap), {cpu[1]:.0f} (default)")
    finally:
        directory.destroy()
        cluster.destroy()
        shutil.rmtree(os.path.dirname(conf), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
