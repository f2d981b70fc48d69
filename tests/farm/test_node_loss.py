"""A node dies outright: haproxy stops sending it users within its check interval, the
other node marks it lost and releases its VM, whose session it then ends; the user
connects again through the balancer and gets the VM on the surviving node.  The dead
node's VM kept running all along (its namespace's processes were not killed): when the
node comes back, its HKD kills that VM before the node serves again (fencing)."""

from __future__ import annotations

import ipaddress
import time

import psutil
from twisted.internet.defer import inlineCallbacks

from qvd.farm import haproxy
from qvd.farm.farm import ping
from tests.farm.support import FarmTestCase

CLUSTER_TIMEOUT = 6  # internal.hkd.cluster.node.timeout of the farm's fast timers


def alive(pids: list[int]) -> list[int]:
    living = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.NoSuchProcess:
            pass
    return living


class NodeLossTests(FarmTestCase):
    @inlineCallbacks
    def test_lost_node_users_move_and_the_node_fences_itself_on_return(self):
        farm = self.farm
        node1, node2 = farm.nodes
        user, desktop = yield self.session_through_node1_on_node2()
        vm_id = user[2]
        farm.qa("host name=node1 set backend=1")
        first = self.row(vm_id)
        self.assertEqual(first["host_id"], node2.host_id)
        stale_vma = first["vm_pid"]

        killed_at = time.monotonic()
        killed = yield self.in_thread(farm.kill_node, 2)
        self.assertEqual(len(killed), 2, "node2's HKD and L7R")
        took = yield self.in_thread(farm.wait_balanced, {"node2": "DOWN", "node1": "UP"}, 15)
        bound = haproxy.FALL * haproxy.CHECK_INTERVAL + 3  # + one check's timeout
        self.assertLess(took, bound, "haproxy kept routing to the dead node")

        yield self.poll(lambda: self.host_state(node2), lambda s: s == "lost",
                        CLUSTER_TIMEOUT + 10, "node1 marking node2 lost")
        self.assertGreater(time.monotonic() - killed_at, CLUSTER_TIMEOUT - 1)
        released = self.row(vm_id)
        self.assertEqual((released["vm_state"], released["host_id"]), ("stopped", None))
        side = yield desktop.when_ended()  # node1's L7R hangs up: the VM is gone for QVD-DB
        self.assertEqual(side, "server")
        yield self.poll(lambda: self.row(vm_id)["user_state"], lambda s: s == "disconnected",
                        10, "the ended session released")

        again = yield self.connected(user)  # through the balancer: node1, the only one up
        row = self.row(vm_id)
        self.assertEqual((row["host_id"], row["l7r_host_id"]), (node1.host_id, node1.host_id))
        self.assertIn(ipaddress.ip_address(row["vm_address"]),
                      ipaddress.ip_network(farm.plan.vm_network(1)))
        yield self.wait_x(vm_id, "connected")
        stale_vm = alive(farm.vm_pids(2, vm_id))  # nobody stopped node2's old VM
        self.assertIn(stale_vma, stale_vm)
        self.assertGreaterEqual(len(stale_vm), 3, "its VMA, xinit and nxagent")

        # node2 returns: its HKD kills the stale VM before its host is running again
        yield self.in_thread(farm.start_daemons, node2)
        served = yield self.poll(lambda: (ping(node2.address)[0], alive(stale_vm)),
                                 lambda seen: seen[0] == 200, 60, "node2 serving again")
        self.assertEqual(served[1], [], "node2 served while its stale VM still ran")
        self.assertEqual(self.host_state(node2), "running")
        yield self.in_thread(farm.wait_balanced, {"node2": "UP", "node1": "UP"}, 15)
        self.assertTrue(again.alive)
        self.assertEqual(self.row(vm_id)["host_id"], node1.host_id)
        self.assertEqual((yield self.x_state(vm_id)), "connected")
