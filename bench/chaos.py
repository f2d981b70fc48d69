"""Failures under live NX sessions on a qvd-farm: what each one drops, how fast the farm
recovers, what rows it leaves wrong.

    .venv/bin/python bench/chaos.py                 # --sessions 100 --nodes 3 --outage 30

As root (it builds a farm: ``qvd.farm``).  Every session is real: a user's
``connect_to_vm`` through haproxy to one of the nodes' L7R processes (two per node), a
process VM with ``qvd-vma`` and nxagent running ``xclock``, Debian's ``nxproxy`` on an
Xvfb on this side.  The failures, one after the other, each starting from all sessions
live (the dropped ones are connected again in between):

- control: nothing fails for ``--outage`` seconds (the yardstick: what a quiet farm drops);
- PostgreSQL restarted (``pg_ctl restart -m fast``);
- PostgreSQL stopped for ``--outage`` seconds, logins tried every 0.5 s meanwhile;
- every node's HKD SIGKILLed, then started again;
- one L7R worker process SIGKILLed (its replacement is started by the first process);
- one node SIGKILLed (its HKD and L7R processes; its VMs keep running), then started
  again once the others have taken its users;
- every node's L7R reloaded (SIGHUP: new processes take the port, the old ones drain),
  with a ping to every node on a new connection after another meanwhile.

A session is "hit" when the failure kills its own L7R process or its VM (the lost node's
VMs count: QVD-DB gives them away); "dropped" counts sessions whose stream ended; any
session dropped that was not hit is a failure of ours.  "Rows wrong" counts
``vm_runtimes`` rows that disagree with the processes once the farm settled (a connected
row without a live session or holder, a running VM without its VMA, a stopped one with a
host).  Prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402
from twisted.internet import defer, reactor, task, threads  # noqa: E402

from qvd.farm import network  # noqa: E402
from qvd.farm.farm import Farm, Options, ping  # noqa: E402
from qvd.farm.sessions import Desktop, request, settings_for  # noqa: E402

CONNECTING = 8  # sessions set up at once
DOWN_BODY = b"The database is not available, retry later"


@dataclass
class Figures:
    failure: str
    live: int
    hit: int
    dropped: int
    dropped_not_hit: int
    recovery: str
    wrong_rows: int
    notes: str

    def row(self) -> str:
        return (f"| {self.failure} | {self.live} | {self.hit} | {self.dropped} |"
                f" {self.dropped_not_hit} | {self.recovery} | {self.wrong_rows} | {self.notes} |")


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def until(check: Callable[[], Any], timeout: float, what: str,
          interval: float = 0.1) -> Generator[Any, Any, float]:
    """Seconds until ``check()`` (blocking, run in a thread) is true; bounded."""
    started = time.monotonic()
    while not (yield threads.deferToThread(check)):
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g}s")
        yield sleep(interval)
    return time.monotonic() - started


def alive(pid: Optional[int]) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Chaos:
    def __init__(self, farm: Farm, users: list[tuple[str, str, int]], display: str, home: str):
        self.farm = farm
        self.users = users
        self.display = display
        self.home = home
        self.desktops: dict[int, Desktop] = {}
        self.figures: list[Figures] = []

    # -- sessions -------------------------------------------------------------------------
    def live(self) -> set[int]:
        return {vm_id for vm_id, d in self.desktops.items() if d.alive}

    @defer.inlineCallbacks
    def connect(self, user: tuple[str, str, int]) -> Generator[Any, Any, None]:
        login, password, vm_id = user
        for attempt in range(5):
            settings = settings_for(self.farm.address, self.farm.port, self.farm.cert,
                                    login, password)
            desktop = Desktop(reactor, settings, vm_id, self.display, self.home)
            try:
                yield desktop.connect()
            except Exception as e:
                yield desktop.close()
                print(f"  {login}: {e}; again", file=sys.stderr)
                yield sleep(1 + attempt)
                continue
            self.desktops[vm_id] = desktop
            return
        raise RuntimeError(f"{login} cannot connect")

    @defer.inlineCallbacks
    def fill(self) -> Generator[Any, Any, float]:
        """Every user connected (the dropped ones again); seconds it took."""
        started = time.monotonic()
        missing = [u for u in self.users if u[2] not in self.live()]
        yield defer.gatherResults([self.desktops.pop(u[2]).close() for u in missing
                                   if u[2] in self.desktops], consumeErrors=True)
        limit = defer.DeferredSemaphore(CONNECTING)
        yield defer.gatherResults([limit.run(self.connect, u) for u in missing],
                                  consumeErrors=True)
        return time.monotonic() - started

    def rows(self) -> dict[int, dict[str, Any]]:
        columns = ("vm_id", "vm_state", "host_id", "vm_address", "vm_pid", "user_state",
                   "l7r_host_id", "l7r_pid")
        return {r[0]: dict(zip(columns, r)) for r in self.farm.sql(
            f"SELECT {', '.join(columns)} FROM vm_runtimes")}

    def wrong_rows(self) -> list[str]:
        """Rows that disagree with the processes and sessions (blocking)."""
        hosts = {n.host_id: n for n in self.farm.nodes}
        states = dict(self.farm.sql("SELECT host_id, state FROM host_runtimes"))
        wrong = []
        for vm_id, r in self.rows().items():
            desktop = self.desktops.get(vm_id)
            session_up = desktop is not None and desktop.alive
            if (r["user_state"] == "connected") != session_up:
                wrong.append(f"{vm_id}: user_state {r['user_state']}, session up {session_up}")
            if r["user_state"] != "disconnected":
                node = hosts.get(r["l7r_host_id"])
                if node is None or r["l7r_pid"] not in network.pids_in(node.namespace):
                    wrong.append(f"{vm_id}: held by a gone L7R {r['l7r_pid']}")
            if r["vm_state"] == "running":
                node = hosts.get(r["host_id"])
                if (node is None or states[node.host_id] != "running"
                        or r["vm_pid"] not in self.farm.vm_pids(node.index, vm_id)):
                    wrong.append(f"{vm_id}: running without its VMA on host {r['host_id']}")
            if r["vm_state"] == "stopped" and (r["host_id"] or r["vm_address"]):
                wrong.append(f"{vm_id}: stopped on host {r['host_id']}")
        return wrong

    # -- one failure ------------------------------------------------------------------------
    @defer.inlineCallbacks
    def measure(self, name: str, hit: set[int], inflict: Callable[[], Any],
                settle: float = 3.0) -> Generator[Any, Any, None]:
        refill = yield self.fill()
        before = {vm_id: d for vm_id, d in self.desktops.items() if d.alive}
        print(f"{name}: {len(before)} live sessions (refilled in {refill:.1f}s)", file=sys.stderr)
        recovery, notes = yield inflict()
        yield sleep(settle)
        gone = {vm_id for vm_id, d in before.items() if not d.alive}  # even if back since
        wrong = yield threads.deferToThread(self.wrong_rows)
        for line in wrong:
            print(f"  wrong row {line}", file=sys.stderr)
        self.figures.append(Figures(name, len(before), len(hit & set(before)), len(gone),
                                    len(gone - hit), recovery, len(wrong), notes))
        print(self.figures[-1].row(), file=sys.stderr)

    def login(self, user: tuple[str, str, int]) -> defer.Deferred[Any]:
        settings = settings_for(self.farm.address, self.farm.port, self.farm.cert,
                                user[0], user[1])
        return request(reactor, settings, "/qvd/list_of_vm")

    @defer.inlineCallbacks
    def first_login(self, timeout: float = 30) -> Generator[Any, Any, tuple[float, int]]:
        """Seconds until a login succeeds, and the refusals (503 + message) before it."""
        started, refused = time.monotonic(), 0
        while True:
            reply = yield self.login(self.users[0])
            if reply.status == 200:
                return time.monotonic() - started, refused
            if (reply.status, reply.body) != (503, DOWN_BODY):
                raise RuntimeError(f"login answered {reply.status} {reply.body!r}")
            refused += 1
            if time.monotonic() - started > timeout:
                raise RuntimeError("logins still refused")

    # -- the failures -------------------------------------------------------------------------
    @defer.inlineCallbacks
    def control(self, seconds: float) -> Generator[Any, Any, tuple[str, str]]:
        yield sleep(seconds)
        return "-", f"{seconds:g} s without a failure"

    @defer.inlineCallbacks
    def database_restart(self) -> Generator[Any, Any, tuple[str, str]]:
        yield threads.deferToThread(self.farm.database.restart)
        took, refused = yield self.first_login()
        return f"{took:.2f} s to the first login", f"{refused} logins refused (503)"

    @defer.inlineCallbacks
    def database_outage(self, seconds: float) -> Generator[Any, Any, tuple[str, str]]:
        yield threads.deferToThread(self.farm.database.stop)
        stopped = time.monotonic()
        answers: dict[tuple[int, bytes], int] = {}
        while time.monotonic() - stopped < seconds:
            reply = yield self.login(self.users[0])
            key = (reply.status, reply.body)
            answers[key] = answers.get(key, 0) + 1
            yield sleep(0.5)
        yield threads.deferToThread(self.farm.database.start)
        took, refused = yield self.first_login()
        seen = ", ".join(f"{n}× {status} {body.decode(errors='replace')!r}"
                         for (status, body), n in answers.items())
        return (f"{took:.2f} s to the first login",
                f"logins while down: {seen}; lost hosts: {self.lost_hosts()}")

    def lost_hosts(self) -> int:
        return self.farm.sql("SELECT count(*) FROM host_runtimes WHERE state = 'lost'")[0][0]

    @defer.inlineCallbacks
    def hkd_restart(self) -> Generator[Any, Any, tuple[str, str]]:
        for node in self.farm.nodes:
            node.hkd.signal(9)
            yield threads.deferToThread(node.hkd.wait)
        vm_pids = {vm_id: r["vm_pid"] for vm_id, r in self.rows().items()}
        started = time.monotonic()
        for node in self.farm.nodes:
            node.hkd.start()
        for node in self.farm.nodes:
            yield threads.deferToThread(self.farm.wait_hkd_running, node)
        took = time.monotonic() - started
        same = sum(1 for vm_id, r in self.rows().items() if r["vm_pid"] == vm_pids[vm_id])
        return f"{took:.2f} s to every node running", f"{same}/{len(vm_pids)} VMs kept their VMA"

    def worker_victims(self) -> tuple[int, set[int]]:
        worker = self.farm.l7r_workers(1)[0]
        return worker, {vm_id for vm_id, r in self.rows().items() if r["l7r_pid"] == worker}

    @defer.inlineCallbacks
    def worker_kill(self, worker: int, victims: set[int]) -> Generator[Any, Any, tuple[str, str]]:
        os.kill(worker, 9)
        killed = time.monotonic()
        reset = yield until(lambda: all(self.rows()[v]["user_state"] == "disconnected"
                                        for v in victims), 60, "the rows reset")
        yield until(lambda: self.farm.l7r_workers(1) not in ([], [worker]), 60, "a new worker")
        back = time.monotonic() - killed
        return (f"{reset:.2f} s to the rows reset",
                f"reset by the replacement worker as it starts (running {back:.1f} s after"
                f" the kill)")

    def node_victims(self, i: int) -> set[int]:
        host = self.farm.node(i).host_id
        return {vm_id for vm_id, r in self.rows().items()
                if host in (r["host_id"], r["l7r_host_id"])}

    @defer.inlineCallbacks
    def node_loss(self, i: int, victims: set[int]) -> Generator[Any, Any, tuple[str, str]]:
        farm, node = self.farm, self.farm.node(i)
        stale = {vm_id: farm.vm_pids(i, vm_id) for vm_id, r in self.rows().items()
                 if r["host_id"] == node.host_id}
        yield threads.deferToThread(farm.kill_node, i)
        killed = time.monotonic()
        yield threads.deferToThread(farm.wait_balanced, {node.name: "DOWN"}, 30, 0.05)
        down = time.monotonic() - killed
        yield until(lambda: self.farm.sql(
            "SELECT state FROM host_runtimes WHERE host_id = %s", (node.host_id,))[0][0]
            == "lost", 60, "the node lost")
        lost = time.monotonic() - killed
        yield until(lambda: all(self.desktops[v].ended for v in victims), 60, "victims ended")
        yield self.fill()
        moved = time.monotonic() - killed
        running_stale = sum(1 for pids in stale.values() if any(alive(p) for p in pids))
        yield threads.deferToThread(farm.start_daemons, node)
        served = yield until(lambda: ping(node.address)[0] == 200, 120, "the node back")
        left = sum(1 for pids in stale.values() if any(alive(p) for p in pids))
        return (f"{moved:.1f} s until its users were back on the others",
                f"haproxy took it out after {down:.1f} s, lost after {lost:.1f} s;"
                f" {running_stale} stale VMs ran until it came back, {left} after"
                f" (it served again {served:.1f} s after restarting)")

    def reloads(self, node: Any) -> int:
        """How many reloads the node's L7R has finished (its log says)."""
        with open(node.l7r.log_path, errors="replace") as f:
            return f.read().count("L7R reloaded")

    @defer.inlineCallbacks
    def l7r_reload(self) -> Generator[Any, Any, tuple[str, str]]:
        farm = self.farm
        before = {node.index: self.reloads(node) for node in farm.nodes}
        old = {pid for node in farm.nodes
               for pid in [node.l7r.pid, *farm.l7r_workers(node.index)]}
        answers: list[int] = []
        done = threading.Event()

        def pinging() -> None:
            while not done.is_set():
                answers.extend(ping(node.address)[0] for node in farm.nodes)

        pinger = threads.deferToThread(pinging)
        yield sleep(1)
        for node in farm.nodes:
            node.l7r.signal(signal.SIGHUP)
        took = yield until(lambda: all(self.reloads(n) > before[n.index] for n in farm.nodes),
                           60, "every L7R reloaded")
        yield sleep(3)
        done.set()
        yield pinger
        draining = sum(1 for r in self.rows().values() if r["l7r_pid"] in old)
        return (f"{took:.2f} s until every node's new L7R processes served",
                f"{answers.count(200)} of {len(answers)} pings straight to the nodes answered"
                f" 200 around it; {draining} sessions still spliced by the draining processes")


@defer.inlineCallbacks
def run(args: argparse.Namespace, xvfb_display: str, home: str) -> Generator[Any, Any, None]:
    farm = Farm(Options(args.nodes, l7r_processes=2, account="nobody",
                        session="/usr/bin/xclock", fast=True))
    try:
        started = time.monotonic()
        yield threads.deferToThread(farm.up)
        print(f"farm up in {time.monotonic() - started:.1f}s", file=sys.stderr)
        users = yield threads.deferToThread(farm.add_desktops, args.sessions)
        chaos = Chaos(farm, users, xvfb_display, home)
        filled = yield chaos.fill()
        print(f"{args.sessions} sessions up in {filled:.1f}s", file=sys.stderr)
        yield chaos.measure("control (nothing fails)", set(),
                            lambda: chaos.control(args.outage))
        yield chaos.measure("PostgreSQL restarted", set(), chaos.database_restart)
        yield chaos.measure(f"PostgreSQL stopped {args.outage:g} s", set(),
                            lambda: chaos.database_outage(args.outage))
        yield chaos.measure("every HKD SIGKILLed and restarted", set(), chaos.hkd_restart)
        yield chaos.fill()
        worker, victims = yield threads.deferToThread(chaos.worker_victims)
        yield chaos.measure("one L7R worker SIGKILLed", victims,
                            lambda: chaos.worker_kill(worker, victims))
        yield chaos.fill()
        victims = yield threads.deferToThread(chaos.node_victims, args.nodes)
        yield chaos.measure(f"node{args.nodes} SIGKILLed (HKD and L7Rs)", victims,
                            lambda: chaos.node_loss(args.nodes, victims))
        yield chaos.measure("every L7R reloaded (SIGHUP)", set(), chaos.l7r_reload)
        print("| failure | live sessions | hit (own L7R process or VM killed) | dropped"
              " | dropped, not hit | recovery | rows wrong | notes |")
        print("|---|---|---|---|---|---|---|---|")
        for figures in chaos.figures:
            print(figures.row())
        yield defer.gatherResults([d.close() for d in chaos.desktops.values()],
                                  consumeErrors=True)
    finally:
        yield threads.deferToThread(farm.down)


def start_xvfb() -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-nolisten", "tcp", "-ac",
                             "-screen", "0", "1600x1200x24"], pass_fds=(write,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        return xvfb, ":" + f.readline().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--outage", type=float, default=30.0,
                        help="seconds of the control period and of the database outage")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    xvfb, display = start_xvfb()
    home = tempfile.mkdtemp(prefix="qvd-chaos-")
    failed: list[Any] = []
    d = run(args, display, home)
    d.addErrback(failed.append)
    d.addBoth(lambda _: reactor.stop())
    try:
        reactor.run()
    finally:
        xvfb.terminate()
        xvfb.wait(10)
        shutil.rmtree(home, ignore_errors=True)
    if failed:
        failed[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
