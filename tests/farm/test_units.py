"""The farm's pure parts: a node's VM address range, the names a plan gives, the haproxy
configuration (checked by haproxy itself)."""

from __future__ import annotations

import os
import subprocess
import tempfile

from twisted.trial import unittest

from qvd.farm import haproxy
from qvd.farm.network import MAX_NODES, Plan
from qvd.hkd import addresses
from qvd.hkd.hypervisor import LaunchError

IFNAMSIZ = 15  # the longest interface name Linux takes


class AddressRangeTests(unittest.TestCase):
    RANGE = "10.9.2.10-10.9.2.13"

    def test_a_vm_starts_at_its_place_in_the_range(self):
        self.assertEqual(addresses.pick(self.RANGE, 10000, set()), "10.9.2.10")
        self.assertEqual(addresses.pick(self.RANGE, 10001, set()), "10.9.2.11")
        self.assertEqual(addresses.pick(self.RANGE, 10003, set()), "10.9.2.13")

    def test_taken_addresses_are_skipped_around_the_end(self):
        self.assertEqual(addresses.pick(self.RANGE, 10003, {"10.9.2.13"}), "10.9.2.10")
        taken = {"10.9.2.10", "10.9.2.11", "10.9.2.13"}
        self.assertEqual(addresses.pick(self.RANGE, 10003, taken), "10.9.2.12")

    def test_a_full_range_says_so(self):
        taken = {f"10.9.2.{n}" for n in range(10, 14)}
        error = self.assertRaises(LaunchError, addresses.pick, self.RANGE, 10000, taken)
        self.assertIn("no free address left in vm.process.ip.range", str(error))

    def test_bad_ranges_are_refused_clearly(self):
        for text in ("10.9.2.10", "10.9.2.10-10.9.2", "10.9.2.20-10.9.2.10", "a-b"):
            error = self.assertRaises(LaunchError, addresses.parse_range, text)
            self.assertIn("bad vm.process.ip.range", str(error))


class PlanTests(unittest.TestCase):
    def test_names_fit_linux_and_stay_in_the_farm(self):
        plan = Plan("0abc", 123, MAX_NODES)
        names = [plan.bridge, plan.namespace(MAX_NODES), plan.root_veth(MAX_NODES),
                 f"{plan.vm_prefix(MAX_NODES)}999999"]  # VM ids start at 10000
        self.assertLessEqual(max(map(len, names)), IFNAMSIZ, names)
        self.assertTrue(all(plan.owns(name) for name in names))
        self.assertFalse(Plan("0abd", 123, 2).owns(plan.namespace(1)))

    def test_each_node_has_its_own_address_and_vm_network(self):
        plan = Plan("0abc", 123, 3)
        self.assertEqual(plan.gateway, "10.123.0.1")
        self.assertEqual([plan.address(i) for i in (1, 2, 3)],
                         ["10.123.0.11", "10.123.0.12", "10.123.0.13"])
        self.assertEqual(plan.vm_network(2), "10.123.2.0/24")
        self.assertEqual(plan.vm_gateway(2), "10.123.2.1")
        self.assertEqual(plan.vm_range(2), "10.123.2.10-10.123.2.250")
        self.assertNotEqual(plan.vm_prefix(1), plan.vm_prefix(2))


class HAProxyConfigTests(unittest.TestCase):
    if not os.path.exists("/usr/sbin/haproxy"):
        skip = "needs haproxy"

    def test_haproxy_accepts_it(self):
        servers = [("node1", "10.123.0.11", 8443), ("node2", "10.123.0.12", 8443)]
        text = haproxy.config_text("/tmp/qvd-farm-test.sock", "127.0.0.1", 18443, servers)
        self.assertIn("http-check send meth GET uri /qvd/ping", text)
        self.assertIn("server node2-fallback 10.123.0.12:8443 backup no-check", text)
        with tempfile.NamedTemporaryFile("w", suffix=".cfg") as f:
            f.write(text)
            f.flush()
            check = subprocess.run([haproxy.binary(), "-c", "-f", f.name],
                                   capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
