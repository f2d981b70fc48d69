"""The L7R's graceful reload under live NX sessions, on a ``twistd qvd-node`` (HKD and L7R in
one process) of a one-node farm.

* ``qvd-node reload`` with two L7R processes: new processes take the port while pings
  keep coming (none fails), the sessions of the first process and of its old worker
  keep exchanging bytes, new sessions go to the new processes, a take-over of a session
  held by the old worker still reaches it (its LISTEN stays), which then exits, and the
  HKD runs on with its VMs untouched.
* SIGHUP with one L7R process and a drain timeout of 2 s: the first process hands the
  port to a new worker, cuts its session after the drain timeout and resets the row; the
  user reconnects through the new worker to the same running VM.
* A draining worker SIGKILLed: its session ends, the first process resets its row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psutil
from twisted.internet.defer import inlineCallbacks

from qvd.farm.farm import ping
from tests.farm.support import FarmTestCase, every
from tests.support.paths import ROOT

RELOAD = "from qvd.nodecli import main; raise SystemExit(main())"


def read_chars(pid: int) -> int:
    """Bytes a process has read so far (nxproxy: mostly the NX stream from the L7R)."""
    return psutil.Process(pid).io_counters().read_chars


class Pinger(threading.Thread):
    """``/qvd/ping`` on a new connection after another, until told to stop."""

    def __init__(self, address: str):
        super().__init__(daemon=True)
        self.address = address
        self.answers: list[tuple[int, bytes]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.answers.append(ping(self.address))

    def failures(self) -> list[tuple[int, bytes]]:
        return [answer for answer in self.answers if answer[0] != 200]


class ReloadTestCase(FarmTestCase):
    nodes = 1
    combined = True

    def logged(self, text: str) -> bool:
        """Whether the node's whole log has ``text``."""
        with open(self.farm.node(0).l7r.log_path, errors="replace") as f:
            return text in f.read()


class ReloadTests(ReloadTestCase):
    processes = 2
    # xclock redraws every second: the NX stream carries bytes all the time
    extra = "command.x-session.args.extra = -update 1\n"

    def reload_command(self, conf: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", RELOAD, "-c", conf, "reload"],
                              capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, PYTHONPATH=ROOT))

    def flowing(self, desktops: list[Any]) -> Any:
        """Until every desktop's nxproxy has read more of its stream than now."""
        before = {d.vm_id: read_chars(d.nxproxy.transport.pid) for d in desktops}
        return self.poll(lambda: {d.vm_id: read_chars(d.nxproxy.transport.pid)
                                  for d in desktops},
                         lambda now: all(now[v] > before[v] for v in before), 10,
                         "bytes through every session")

    @inlineCallbacks
    def test_reload_drops_no_session_and_refuses_no_connection(self):
        farm, node = self.farm, self.farm.node(0)
        first = node.l7r.pid
        desktops = yield self.sessions_on_both_processes(node.address)
        yield every(self.wait_x(d.vm_id) for d in desktops)
        [old_worker] = farm.l7r_workers(0)
        held = {d.vm_id: self.row(d.vm_id) for d in desktops}
        self.assertEqual({r["l7r_pid"] for r in held.values()}, {first, old_worker})
        [extra] = yield self.in_thread(farm.add_desktops, 1, 100)

        pinger = Pinger(node.address)
        pinger.start()
        self.addCleanup(pinger.done.set)
        yield self.poll(lambda: len(pinger.answers), lambda n: n >= 3, 10, "pings before")
        done = yield self.in_thread(self.reload_command, node.conf)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"asked the L7R (pid {first}) to reload", done.stdout)
        new = yield self.poll(lambda: set(farm.l7r_workers(0)) - {old_worker},
                              lambda pids: len(pids) == 2, 30, "two new L7R processes")
        yield self.poll(lambda: self.logged("L7R draining"), bool, 30, "the old ones draining")
        reloaded_at = len(pinger.answers)
        yield self.poll(lambda: len(pinger.answers), lambda n: n >= reloaded_at + 20, 20,
                        "pings after")
        pinger.done.set()
        yield self.in_thread(pinger.join)
        self.assertEqual(pinger.failures()[:3], [], "connections refused or failed")

        self.assertTrue(all(d.alive for d in desktops), "sessions dropped")
        yield self.flowing(desktops)
        self.assertEqual({v: self.row(v) for v in held}, held)

        later = yield self.connected(extra, node.address)
        self.assertIn(self.row(later.vm_id)["l7r_pid"], new)

        # take-overs of the old worker's sessions: that worker hears the aborts, then exits
        victims = [d for d in desktops if held[d.vm_id]["l7r_pid"] == old_worker]
        taken = []
        for victim in victims:
            taken.append((yield self.connected(
                (victim.settings.user, victim.settings.password, victim.vm_id), node.address)))
        sides = yield every(victim.when_ended() for victim in victims)
        self.assertEqual(set(sides), {"server"})
        self.assertLessEqual({self.row(v.vm_id)["l7r_pid"] for v in victims}, new)
        yield self.poll(lambda: psutil.pid_exists(old_worker), lambda alive: not alive, 20,
                        "the old worker exiting after its last session")
        self.assertTrue(all(d.alive for d in taken) and later.alive)

        # the first process kept its session; the HKD beat on and left the VMs alone
        kept = [d for d in desktops if held[d.vm_id]["l7r_pid"] == first]
        self.assertTrue(all(d.alive for d in kept))
        yield self.flowing(kept + taken)
        self.assertEqual(self.host_state(node), "running")
        self.assertEqual({self.row(d.vm_id)["vm_pid"] for d in desktops},
                         {r["vm_pid"] for r in held.values()})
        self.assertEqual(set(farm.l7r_workers(0)), new)

    @inlineCallbacks
    def test_a_draining_worker_killed_has_its_rows_released(self):
        """No new worker replaces a draining one, so the first process resets the rows
        of one that dies."""
        farm, node = self.farm, self.farm.node(0)
        desktops = yield self.sessions_on_both_processes(node.address)
        yield every(self.wait_x(d.vm_id) for d in desktops)
        [old_worker] = farm.l7r_workers(0)
        victim = next(d for d in desktops if self.row(d.vm_id)["l7r_pid"] == old_worker)
        node.l7r.signal(signal.SIGHUP)
        yield self.poll(lambda: self.logged("L7R draining"), bool, 30, "the old ones draining")
        new = set(farm.l7r_workers(0)) - {old_worker}

        os.kill(old_worker, signal.SIGKILL)
        side = yield victim.when_ended()
        self.assertEqual(side, "server")
        row = yield self.poll(lambda: self.row(victim.vm_id),
                              lambda r: r["user_state"] == "disconnected", 10, "row released")
        self.assertEqual((row["l7r_pid"], row["vm_state"]), (None, "running"))
        self.assertEqual(set(farm.l7r_workers(0)), new)
        self.assertTrue(all(d.alive for d in desktops if d is not victim))


class DrainTimeoutTests(ReloadTestCase):
    processes = 1
    extra = "l7r.reload.drain_timeout = 2\n"

    @inlineCallbacks
    def test_the_drain_timeout_cuts_the_old_session_and_resets_its_row(self):
        farm, node = self.farm, self.farm.node(0)
        [user] = yield self.users(1)
        desktop = yield self.connected(user, node.address)
        yield self.wait_x(user[2])
        before = self.row(user[2])
        self.assertEqual(before["l7r_pid"], node.l7r.pid)
        self.assertEqual(farm.l7r_workers(0), [])

        node.l7r.signal(signal.SIGHUP)
        side = yield desktop.when_ended()
        self.assertEqual(side, "server")
        [worker] = farm.l7r_workers(0)
        row = yield self.poll(lambda: self.row(user[2]),
                              lambda r: r["user_state"] == "disconnected", 10, "row released")
        self.assertEqual((row["l7r_pid"], row["vm_state"], row["vm_pid"]),
                         (None, "running", before["vm_pid"]))
        self.assertTrue(self.logged("L7R drain timeout: cutting its 1 sessions"))
        self.assertTrue(node.l7r.running, "the first process (and its HKD) runs on")

        yield self.wait_x(user[2], "suspended")
        again = yield self.connected(user, node.address)
        self.assertEqual(self.row(user[2])["l7r_pid"], worker)
        self.assertTrue(again.alive)
