"""Two HKDs on one machine as two hosts sharing one QVD-DB: lost hosts and fencing."""

from __future__ import annotations

import os
import signal

from twisted.internet.defer import inlineCallbacks

from tests.support.hkd import HKDTestCase, pid_gone


class ClusterTests(HKDTestCase):
    @inlineCallbacks
    def test_a_silent_host_is_lost_and_fences_itself_when_it_wakes_up(self):
        a_id, a_conf = self.host("node-a", "127.0.0.1")
        b_id, b_conf = self.host("node-b", "127.0.0.2", "vm.process.address = 127.0.0.2\n")
        yield self.start_hkd(a_conf, a_id)
        b = yield self.start_hkd(b_conf, b_id)
        vm_id = self.new_vm("v1")
        self.qa("host name=node-a block")
        self.qa(f"vm id={vm_id} start")
        self.qa("host name=node-a unblock")
        row = yield self.wait_vm(vm_id, "running")
        self.assertEqual((row["host_id"], row["vm_address"]), (b_id, "127.0.0.2"))
        self.assertEqual((yield self.ping(row)), 1)

        # a session through node-b's L7R, and one through node-a's to a VM that is gone
        self.db.query("UPDATE vm_runtimes SET user_state = 'connected', l7r_host_id = %s"
                      " WHERE vm_id = %s", (b_id, vm_id))
        orphan = self.new_vm("v2")
        self.db.query("UPDATE vm_runtimes SET user_state = 'connected', l7r_host_id = %s"
                      " WHERE vm_id = %s", (a_id, orphan))

        os.kill(b.pid, signal.SIGSTOP)  # no more heartbeats from node-b
        try:
            yield self.wait_host(b_id, "lost", 30)
            released = yield self.poll(lambda: self.vm_row(vm_id), lambda r: r["host_id"] is None,
                                       10, "release")
            self.assertEqual(released["vm_state"], "stopped")
            self.assertEqual(self.session(vm_id), ("disconnected", None, None))
            self.assertEqual(self.session(orphan), ("connected", a_id, "abort"))
            self.assertFalse(pid_gone(row["vm_pid"]), "node-b's VMA still runs: fencing's job")
        finally:
            ended = b.ended()
            os.kill(b.pid, signal.SIGCONT)
        # node-b saw it was lost: it killed its VMs and stopped, with a failure status
        self.assertEqual((yield ended), 1, b.output())
        self.assertTrue(pid_gone(row["vm_pid"]))
        self.assertEqual(self.host_state(b_id), "stopped")
        self.assertEqual((self.vm_row(vm_id)["vm_state"], self.vm_row(vm_id)["host_id"]),
                         ("stopped", None))
        self.assertEqual(self.host_state(a_id), "running")

        self.qa(f"vm id={vm_id} start")  # the load balancer now only has node-a
        row = yield self.wait_vm(vm_id, "running")
        self.assertEqual(row["host_id"], a_id)

    def session(self, vm_id: int) -> tuple:
        return self.db.query("SELECT user_state, l7r_host_id, user_cmd FROM vm_runtimes"
                             " WHERE vm_id = %s", (vm_id,))[0]
