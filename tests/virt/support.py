"""A node whose VMs are real containers or QEMU guests: a private libvirtd
(``tests.support.libvirtd``), the HKD and L7R in its network namespace, the DIs
``qvd-di`` builds (``tests.support.images``), QVD-DB as in the other tests.

The node's QVD network is 10.81.0.0/16 on bridge ``qvdtestbr`` with the node as gateway
(10.81.0.1): the HKD creates the bridge and runs dnsmasq there itself.  Everything
lives in the test's namespaces and is removed with them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Optional

try:
    import libvirt
except ImportError:  # ./run-tests installs the libvirt extra
    libvirt = None
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks

from qvd.embedded import ensure_certificate
from qvd.stream.sockets import free_port
from tests.support.hkd import TIMERS
from tests.support.node import ClientProcess, NodeTestCase
from tests.support.paths import ROOT
from tests.support.processes import Twistd
from tests.support.vma import rpc_in
from tests.support.waiting import poll_blocking
from tests.support.libvirtd import PrivateLibvirtd, available
from tests.support.postgres import cluster, drop_database, new_database

GATEWAY = "10.81.0.1"
BRIDGE = "qvdtestbr"
CLIENT = "from qvd.client.cli import main; main()"
# A container boots in seconds; a QEMU guest under TCG in tens of seconds.
NODE_EXTRA = f"""\
nodename = test-node
l7r.address = 127.0.0.1
vm.network.ip.start = 10.81.0.100
vm.network.netmask = 255.255.0.0
vm.network.gateway = {GATEWAY}
vm.network.bridge = {BRIDGE}
vm.network.dns_server = {GATEWAY}
internal.l7r.poll_time.vm = 0.3
internal.l7r.poll_time.x = 0.3
internal.l7r.timeout.x_start = 30
internal.hkd.agent.l7rkiller.delay = 1
internal.hkd.libvirt.check.delay = 0.5
internal.hkd.lxc.timeout.on_state.stopping.shutdown.waiting_for_lxc = 20
internal.hkd.lxc.timeout.on_state.stopping.stop.waiting_for_lxc = 10
internal.hkd.kvm.timeout.on_state.stopping.shutdown.waiting_for_kvm = 60
internal.hkd.kvm.timeout.on_state.stopping.stop.waiting_for_kvm = 10
"""
# The VMA's first answer: a container within seconds, a TCG guest within minutes.
BOOT_LIMITS = """\
internal.hkd.vmhandler.vma.failed.max_time.on.starting = 400
internal.hkd.vmhandler.vma.failed.max_count.on.starting = 2000
internal.hkd.vmhandler.vma.failed.max_count.on.running = 10
internal.hkd.vmhandler.vma.failed.max_time.on.running = 20
"""


class VirtNodeTestCase(NodeTestCase):
    """QVD-DB with host ``test-node``, OSF ``desk`` on the flavour's DI, alice's VM ``desk``
    (``NodeTestCase``'s helpers, another set-up: no process VM, no demo DI)."""

    flavour = "lxc"
    plugin = "qvd-node"
    libvirtd: Optional[PrivateLibvirtd] = None
    why_not = available() or (None if libvirt else "needs libvirt-python")
    if why_not:
        skip = why_not

    @classmethod
    def setUpClass(cls) -> None:
        cls.base = tempfile.mkdtemp(prefix=f"qvd-{cls.flavour}-test-")
        os.chmod(cls.base, 0o755)
        cls.libvirtd = PrivateLibvirtd(os.path.join(cls.base, "libvirt"),
                                       os.path.join(cls.base, "storage"), f"qvdt{os.getpid()}")
        cls.libvirtd.start()

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.libvirtd is not None:
            cls.libvirtd.stop()
        shutil.rmtree(cls.base, True)

    def setUp(self) -> None:
        self.db = new_database()
        self.addCleanup(drop_database, self.db)
        self.root = self.base
        self.storage = os.path.join(self.base, "storage")
        self.key = os.path.join(self.root, "ssl", "key.pem")
        self.cert = os.path.join(self.root, "ssl", "cert.pem")
        ensure_certificate(self.key, self.cert, "localhost")
        self.port = free_port()
        self.conf = self.db.write_conf(self.root, self.node_conf())
        self.node: Optional[Twistd] = None
        self.clients: list[ClientProcess] = []
        self.addCleanup(self._stop_everything)

    def node_conf(self, extra: str = "") -> str:
        assert self.libvirtd is not None
        return (f"{NODE_EXTRA}{TIMERS}{BOOT_LIMITS}vm.hypervisor = {self.flavour}\n"
                f"vm.libvirt.uri.{self.flavour} = {self.libvirtd.uri(self.driver)}\n"
                f"database.host = {cluster().socket_dir}\n"
                f"l7r.port = {self.port}\npath.run = {self.root}/run\n"
                f"path.log = {self.root}/log\npath.storage.root = {self.storage}\n"
                f"path.l7r.ssl.key = {self.key}\npath.l7r.ssl.cert = {self.cert}\n{extra}")

    @property
    def driver(self) -> str:
        return "lxc" if self.flavour == "lxc" else "qemu"

    @inlineCallbacks
    def add_vm(self, image: str, osf: str = "memory=512,user_storage=64"):
        """Host, OSF, the DI (``qa di new`` copies it into the images), alice and her VM."""
        self.qa("host new name=test-node,address=127.0.0.1")
        self.qa(f"osf new name=desk,{osf}")
        yield threads.deferToThread(self.qa, f"di new disk_image={image},osf=desk")
        self.qa("user new login=alice,password=s3cret")
        self.qa("vm new name=desk,user=alice,osf=desk")
        self.vm_id = self.db.query("SELECT id FROM vms WHERE name = 'desk'")[0][0]

    # -- the node ----------------------------------------------------------------------
    @inlineCallbacks
    def start_node(self):
        assert self.libvirtd is not None
        self.node = Twistd(self.plugin, self.conf, self.root, self.libvirtd.in_netns())
        self.node.start()
        yield self.wait(self.host_state, lambda s: s == "running", 60, "host running")

    def host_state(self) -> str:
        return self.db.query("SELECT state FROM host_runtimes")[0][0]

    def runtime(self) -> dict[str, Any]:
        columns = ("vm_state", "user_state", "vm_address", "vm_vma_port", "vm_x_port", "vm_pid")
        row = self.db.query(f"SELECT {', '.join(columns)} FROM vm_runtimes WHERE vm_id = %s",
                            (self.vm_id,))[0]
        return dict(zip(columns, row))

    def wait(self, check, until, timeout: float, what: str) -> Deferred:
        return poll_blocking(check, until, timeout, what, explain=self.explain)

    @inlineCallbacks
    def wait_vm(self, state: str, timeout: float):
        """The VM's row once in ``state``; a failure as soon as the HKD gave up on it."""
        gave_up = f"VM {self.vm_id} cannot start"
        row = yield self.wait(
            lambda: (self.runtime(), self.node is not None and gave_up in self.node.output()),
            lambda found: found[0]["vm_state"] == state or found[1], timeout, f"VM {state}")
        if row[0]["vm_state"] != state:
            raise AssertionError(f"the HKD gave up on the VM{self.explain()}")
        return row[0]

    def rpc(self, method: str) -> str:
        """A SimpleRPC call to the VM's VMA at its own address, across the bridge, from the
        node's namespace (blocking: call it in a thread)."""
        row = self.runtime()
        assert self.libvirtd is not None
        return rpc_in(self.libvirtd.in_netns(), row["vm_address"], row["vm_vma_port"], method)

    def domain(self) -> Optional[Any]:
        """The VM's libvirt domain, if defined."""
        assert self.libvirtd is not None
        conn = libvirt.open(self.libvirtd.uri(self.driver))
        try:
            return conn.lookupByName(f"qvd-{self.vm_id}")
        except libvirt.libvirtError:
            return None
        finally:
            conn.close()

    def explain(self, *clients: ClientProcess) -> str:
        """The node's side (``NodeTestCase.explain``) and the guest's own logs."""
        text = super().explain(*clients)
        guest_logs = os.path.join(self.storage, "rootfs", f"{getattr(self, 'vm_id', 0)}-fs",
                                  "var", "log", "qvd")
        for name in sorted(os.listdir(guest_logs)) if os.path.isdir(guest_logs) else []:
            with open(os.path.join(guest_logs, name), errors="replace") as f:
                text += f"\n--- guest's {name}\n" + "".join(f.readlines()[-30:])
        return text

    # -- clients -------------------------------------------------------------------------
    def client(self, *args: str, display: Optional[str] = None) -> ClientProcess:
        """``qvd-client`` (as alice) in the node's namespace, on ``display``."""
        assert self.libvirtd is not None
        home = os.path.join(self.root, "client-home")
        os.makedirs(home, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT,
               "HOME": home}
        if display:
            env["DISPLAY"] = display
        argv = self.libvirtd.in_netns() + [
            sys.executable, "-c", CLIENT, "-h", "127.0.0.1", "-p", str(self.port), "--ca",
            self.cert, "-u", "alice", "-w", "s3cret", *args]
        protocol = ClientProcess()
        reactor.spawnProcess(protocol, argv[0], argv, env=env)
        self.clients.append(protocol)
        return protocol
