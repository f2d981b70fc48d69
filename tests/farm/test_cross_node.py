"""A client of node1's L7R gets a VM the load balancer started on node2, spliced from
node1 across the farm's network to node2's VM; node2's L7R never sees the client."""

from __future__ import annotations

import ipaddress
import os
import subprocess

from twisted.internet.defer import inlineCallbacks

from qvd.farm import network
from tests.farm.support import FarmTestCase


def established(namespace: str, port: int) -> list[str]:
    """Peers of the TCP connections established to ``port`` inside a namespace."""
    out = subprocess.run(network.in_namespace(namespace)
                         + ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()]


class CrossNodeTests(FarmTestCase):
    @inlineCallbacks
    def test_session_through_node1_to_a_vm_on_node2(self):
        farm = self.farm
        node1, node2 = farm.nodes
        # node1 only serves clients (hosts.backend = 0): the load balancer must pick node2
        user, desktop = yield self.session_through_node1_on_node2()
        vm_id = user[2]

        row = self.row(vm_id)
        self.assertEqual((row["host_id"], row["vm_state"]), (node2.host_id, "running"))
        self.assertEqual((row["l7r_host_id"], row["user_state"]), (node1.host_id, "connected"))
        self.assertIn(ipaddress.ip_address(row["vm_address"]),
                      ipaddress.ip_network(farm.plan.vm_network(2)))
        yield self.wait_x(vm_id, "connected")
        self.assertTrue(desktop.alive)

        # the client's TLS connection is node1's; node2's L7R has none and counted nothing
        self.assertEqual(established(node1.namespace, farm.port), [farm.address])
        self.assertEqual(established(node2.namespace, farm.port), [])
        counted = dict(farm.sql("SELECT host_id, http_requests FROM host_counters"))
        self.assertEqual(counted[node2.host_id], 0)
        self.assertGreater(counted[node1.host_id], 0)
        # and the NX stream reached node2's nxagent from node1's address
        nxagent_log = os.path.join(node2.directory, "process", str(vm_id), "log",
                                   "qvd-nxagent.log")
        with open(nxagent_log, errors="replace") as f:
            self.assertIn(f"Accepted connection from '{node1.address}'", f.read())

        yield desktop.close()
        yield self.poll(lambda: self.row(vm_id)["user_state"], lambda s: s == "disconnected",
                        15, "node1's L7R releasing the session")
