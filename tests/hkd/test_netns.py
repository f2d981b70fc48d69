"""Process VMs in their own network namespaces, on a bridge in a namespace of the test's.

Everything lives in namespaces this test creates: the HKD runs inside one
that holds the bridge (it reaches QVD-DB through PostgreSQL's Unix socket),
and each VM gets its own.  Needs root and iproute2.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from tests.support.hkd import HKDTestCase
from tests.support.postgres import cluster

IP = shutil.which("ip")
NSENTER = shutil.which("nsenter")
BRIDGE_ADDRESS = "10.77.0.1"


def ip(*args: str) -> str:
    return subprocess.run([IP, *args], check=True, capture_output=True, text=True).stdout


def namespaces() -> str:
    return ip("netns", "list")


class NetworkNamespaceTests(HKDTestCase):
    if os.geteuid() != 0 or IP is None or NSENTER is None:
        skip = "needs root, iproute2 and nsenter"

    def setUp(self) -> None:
        super().setUp()
        self.ns = f"qvdtest{os.getpid()}"
        ip("netns", "add", self.ns)
        self.addCleanup(ip, "netns", "del", self.ns)
        for args in (("link", "set", "lo", "up"), ("link", "add", "qvdnet", "type", "bridge"),
                     ("addr", "add", f"{BRIDGE_ADDRESS}/16", "dev", "qvdnet"),
                     ("link", "set", "qvdnet", "up")):
            ip("-n", self.ns, *args)

    @inlineCallbacks
    def test_a_vm_answers_at_its_own_address(self):
        host_id, conf = self.host(extra=(
            f"database.host = {cluster().socket_dir}\n"
            f"vm.network.gateway = {BRIDGE_ADDRESS}\n"))
        # nsenter, not "ip netns exec": the HKD must share our mount namespace,
        # where "ip netns add" makes the VMs' namespaces visible.
        yield self.start_hkd(conf, host_id, [NSENTER, f"--net=/run/netns/{self.ns}", "--"])
        self.qa("vm new name=v1,user=alice,osf=desk,ip=10.77.0.50")
        vm_id = self.db.query("SELECT id FROM vms WHERE name = 'v1'")[0][0]
        vm_ns = f"qvd{vm_id}"
        self.addCleanup(subprocess.run, [IP, "netns", "del", vm_ns], capture_output=True)
        self.qa(f"vm id={vm_id} start")
        row = yield self.wait_vm(vm_id, "running")  # the HKD pinged it across the bridge
        self.assertEqual((row["vm_address"], row["vm_vma_port"]), ("10.77.0.50", 3030))
        eth0 = yield threads.deferToThread(ip, "-n", vm_ns, "addr", "show", "eth0")
        self.assertIn("inet 10.77.0.50/16", eth0)
        self.assertIn("54:52:00:4d:00:32", eth0)  # QVD 4: the last octets in hex

        self.qa(f"vm id={vm_id} stop")
        yield self.wait_vm(vm_id, "stopped")
        self.assertNotIn(vm_ns, (yield threads.deferToThread(namespaces)))
