"""Daemons killed under live NX sessions (each node runs two L7R processes).

* An HKD SIGKILLed and started again adopts the running VMs: no session drops, no VM
  is restarted, the rows stay as they were.
* One L7R worker SIGKILLed: the sessions it spliced end (nothing else can hold their
  sockets); the worker's replacement, started by the first L7R process, releases their
  ``vm_runtimes`` rows as it starts; the sessions of the other process go on.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.internet.defer import inlineCallbacks

from qvd.l7r.workers import RESTART_DELAYS
from tests.farm.support import FarmTestCase, every


class DaemonFailureTests(FarmTestCase):
    processes = 2

    @inlineCallbacks
    def test_hkd_killed_and_restarted_adopts_its_vms(self):
        farm = self.farm
        _, desktops, vm_ids = yield self.live_sessions(3)
        before = {vm_id: self.row(vm_id) for vm_id in vm_ids}

        for node in farm.nodes:
            node.hkd.signal(signal.SIGKILL)
            yield self.in_thread(node.hkd.wait)
        self.assertTrue(all(d.alive for d in desktops), "the L7Rs splice without the HKDs")
        for node in farm.nodes:
            node.hkd.start()
        for node in farm.nodes:
            yield self.in_thread(farm.wait_hkd_running, node)
        yield self.poll(lambda: all(f"adopted VM {v}" in self.logs() for v in vm_ids), bool,
                        20, "the VMs adopted")

        self.assertEqual([d.vm_id for d in desktops if not d.alive], [])
        self.assertEqual({vm_id: self.row(vm_id) for vm_id in vm_ids}, before)
        states = yield every(self.x_state(vm_id) for vm_id in vm_ids)
        self.assertEqual(set(states), {"connected"})

    @inlineCallbacks
    def test_a_killed_l7r_worker_loses_its_sessions_only(self):
        farm = self.farm
        node = farm.node(1)
        desktops = yield self.sessions_on_both_processes(node.address)
        # (a stream cut before nxagent has its client ends the session: wait for them)
        yield every(self.wait_x(d.vm_id) for d in desktops)
        [worker] = farm.l7r_workers(1)
        victims = [d for d in desktops if self.row(d.vm_id)["l7r_pid"] == worker]
        others = [d for d in desktops if d not in victims]
        self.assertTrue(victims and others)
        untouched = {d.vm_id: self.row(d.vm_id) for d in others}

        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        sides = yield every(d.when_ended() for d in victims)
        self.assertEqual(set(sides), {"server"})
        rows = yield self.poll(
            lambda: [self.row(d.vm_id) for d in victims],
            lambda rows: all(r["user_state"] == "disconnected" for r in rows), 15,
            "the killed worker's rows released")
        reset_after = time.monotonic() - killed_at
        self.assertEqual({(r["l7r_host_id"], r["l7r_pid"], r["vm_state"]) for r in rows},
                         {(None, None, "running")})
        # by the worker's replacement, which the first process starts after RESTART_DELAYS[0]
        [replacement] = farm.l7r_workers(1)
        self.assertNotEqual(replacement, worker)
        self.assertGreater(reset_after, RESTART_DELAYS[0] - 0.5)
        for d in victims:  # (a worker's log lines go to the first process's log)
            self.assertIn(f"worker 0] releasing VM {d.vm_id} held by L7R pid {worker}",
                          self.logs())

        self.assertTrue(all(d.alive for d in others))
        self.assertEqual({d.vm_id: self.row(d.vm_id) for d in others}, untouched)
        yield every(self.wait_x(d.vm_id, "suspended") for d in victims)
        victim = victims[0]  # its user connects again, to the same VM
        again = yield self.connected(
            (victim.settings.user, victim.settings.password, victim.vm_id), node.address)
        self.assertTrue(again.alive)
