"""The kvm and lxc hypervisors against libvirt's ``test:///default`` driver.

Every domain operation (define, start, shut down, destroy, undefine, list) goes to
libvirt's own test driver; the storage is real (qemu-img, overlayfs mounts as root,
tar), so what a VM would boot from is checked on disk.  Each flavour's domain XML is
validated with ``virt-xml-validate``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

from twisted.internet import defer, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.config import Config, ConfigError, parse_properties
from qvd.db.runtimes import VMSpec
from qvd.hkd.hypervisor import IHypervisor, IVMInstance, LaunchError
from qvd.hkd.process import ProcessHypervisor
from qvd.hkd.virt import domains, lxcfs
from qvd.hkd.virt.network import NetworkPlan
from tests.support import waiting

try:
    import libvirt
except ImportError:
    libvirt = None

VALIDATE = shutil.which("virt-xml-validate")
QEMU_IMG = shutil.which("qemu-img")


def validate(testcase: unittest.TestCase, xml: str) -> None:
    path = os.path.abspath(testcase.mktemp()) + ".xml"
    with open(path, "w") as f:
        f.write(xml)
    done = subprocess.run([VALIDATE, path, "domain"], capture_output=True, text=True)
    testcase.assertEqual(done.returncode, 0, f"{done.stderr}\n{xml}")


def libvirt_test_driver() -> "libvirt.virConnect":
    return libvirt.open("test:///default")


class LibvirtTestCase(unittest.TestCase):
    if libvirt is None or VALIDATE is None or QEMU_IMG is None or os.geteuid() != 0:
        skip = "needs libvirt-python, virt-xml-validate, qemu-img and root (mounts)"

    flavour = "lxc"
    next_id = 51000 + os.getpid() % 1000 * 10  # the test driver's domains live per process

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "storage", "images"))
        LibvirtTestCase.next_id += 1
        self.vm_id = LibvirtTestCase.next_id
        self.config = self.make_config()
        self.hypervisors = []
        self.addCleanup(self._clean)

    def make_config(self, **extra: str) -> Config:
        values = {
            "vm.hypervisor": self.flavour, f"vm.libvirt.uri.{self.flavour}": "test:///default",
            "path.run": f"{self.root}/run", "path.log": f"{self.root}/log",
            "path.storage.root": f"{self.root}/storage",
            "vm.network.gateway": "10.99.0.1", "vm.network.ip.start": "10.99.0.100",
            "vm.network.use_dhcp": "0", "internal.vm.network.firewall.enable": "0",
            "vm.serial.redirect": "0", "vm.kvm.accel": "tcg",
            "vma.on_action.connect": "/usr/local/bin/on-connect",
        }
        values.update(extra)
        return Config(values)

    def hypervisor(self, config=None):
        from qvd.hkd.hypervisor import make_hypervisor
        hypervisor = make_hypervisor(config or self.config, reactor)
        self.hypervisors.append(hypervisor)
        return hypervisor

    @defer.inlineCallbacks
    def _clean(self):
        conn = libvirt_test_driver()
        for dom in conn.listAllDomains(0):
            if domains.vm_id_of(dom.name()) in range(self.vm_id, self.vm_id + 5):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for point in lxcfs.mounts_under(self.root):
            subprocess.run(["umount", "-l", point])
        for hypervisor in self.hypervisors:
            yield hypervisor.connection.call(lambda conn: None)
            hypervisor.connection.close()

    def spec(self, di_path: str, vm_id=None, **changes) -> VMSpec:
        values = dict(vm_id=vm_id or self.vm_id, name="desk", user_id=1, login="alice",
                      osf_id=1, di_tag="default", ip="10.99.0.150", di_id=7, di_path=di_path,
                      memory=256, user_storage_size=64, use_overlay=True)
        values.update(changes)
        return VMSpec(**values)

    def domain(self, vm_id=None):
        return libvirt_test_driver().lookupByName(domains.domain_name(vm_id or self.vm_id))


def make_tarball(path: str) -> None:
    """A tiny LXC DI: a root with sbin/init, as a tarball."""
    tree = path + ".tree"
    os.makedirs(os.path.join(tree, "sbin"))
    os.makedirs(os.path.join(tree, "etc"))
    with open(os.path.join(tree, "sbin", "init"), "w") as f:
        f.write("#!/bin/sh\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=".")


class LXCTests(LibvirtTestCase):
    def setUp(self) -> None:
        super().setUp()
        make_tarball(os.path.join(self.root, "storage", "images", "desk.tar.gz"))

    def test_providers(self):
        verifyObject(IHypervisor, self.hypervisor())
        verifyObject(IHypervisor, ProcessHypervisor(self.config, reactor))

    @defer.inlineCallbacks
    def test_launch_defines_and_starts_a_container_on_the_manuals_layout(self):
        hypervisor = self.hypervisor()
        vm = yield hypervisor.launch(self.spec("desk.tar.gz"))
        verifyObject(IVMInstance, vm)
        self.assertEqual((vm.address, vm.ports["vma"], vm.ports["x"]), ("10.99.0.150", 3030, 4100))
        dom = self.domain()
        self.assertTrue(dom.isActive())
        xml = dom.XMLDesc(0)
        storage = f"{self.root}/storage"
        rootfs = f"{storage}/rootfs/{self.vm_id}-fs"
        self.assertIn(f"<source dir='{rootfs}'/>", xml)
        self.assertIn(f"<source dir='{storage}/homefs/{self.vm_id}-fs'/>", xml)
        self.assertIn("<mac address='54:52:00:63:00:96'/>", xml)  # QVD 4: IP's last octets
        self.assertIn(f"<target dev='qvd{self.vm_id}'/>", xml)
        self.assertEqual(lxcfs.mounts_under(rootfs), [rootfs])  # the overlay
        self.assertTrue(os.path.isfile(f"{storage}/basefs/desk/sbin/init"))
        self.assertTrue(os.path.isdir(f"{storage}/overlayfs/7-{self.vm_id}-overlayfs"))
        with open(f"{rootfs}/etc/qvd/vma.conf") as f:
            conf = parse_properties(f.read())
        self.assertEqual((conf["vma.user.provisioning"], conf["internal.vm.port.vma"],
                          conf["vma.on_action.connect"], conf["vma.poweroff.command"]),
                         ("1", "3030", "/usr/local/bin/on-connect", "poweroff"))
        with open(f"{self.root}/run/lxc/qvd-{self.vm_id}/domain.xml") as f:
            validate(self, f.read())

    @defer.inlineCallbacks
    def test_kill_destroys_the_domain_and_the_poll_notices(self):
        hypervisor = self.hypervisor()
        vm = yield hypervisor.launch(self.spec("desk.tar.gz"))
        exited = vm.when_exited()
        vm.signal("KILL")
        yield waiting.poll(lambda: self.domain().isActive(), lambda active: not active, 10,
                           "domain destroyed")
        self.assertFalse(exited.called)
        yield hypervisor._check()
        self.assertTrue(exited.called)

    @defer.inlineCallbacks
    def test_a_restarted_hkd_adopts_running_domains_only(self):
        vm = yield self.hypervisor().launch(self.spec("desk.tar.gz"))
        later = self.hypervisor()
        adopted = yield later.adopt(self.vm_id)
        self.assertEqual((adopted.address, adopted.ports), (vm.address, vm.ports))
        self.domain().destroy()
        self.assertIsNone((yield self.hypervisor().adopt(self.vm_id)))
        self.assertIsNone((yield self.hypervisor().adopt(self.vm_id + 3)))

    @defer.inlineCallbacks
    def test_release_undefines_and_unmounts(self):
        hypervisor = self.hypervisor()
        yield hypervisor.launch(self.spec("desk.tar.gz"))
        yield hypervisor.release(self.vm_id)
        self.assertRaises(libvirt.libvirtError, self.domain)
        self.assertEqual(lxcfs.mounts_under(self.root), [])
        self.assertFalse(os.path.exists(f"{self.root}/run/lxc/qvd-{self.vm_id}/vm.json"))

    @defer.inlineCallbacks
    def test_strays_are_destroyed_and_others_kept(self):
        hypervisor = self.hypervisor()
        yield hypervisor.launch(self.spec("desk.tar.gz"))
        yield hypervisor.launch(self.spec("desk.tar.gz", vm_id=self.vm_id + 1,
                                          ip="10.99.0.151"))
        later = self.hypervisor()
        reaped = yield later.reap_strays({self.vm_id} | set(range(self.vm_id + 2, 99999)))
        self.assertEqual(reaped, [self.vm_id + 1])
        self.assertTrue(self.domain().isActive())
        self.assertRaises(libvirt.libvirtError, self.domain, self.vm_id + 1)
        self.assertTrue(libvirt_test_driver().lookupByName("test").isActive(), "not ours: untouched")

    @defer.inlineCallbacks
    def kept_across_a_restart(self, hypervisor, name: str):
        """Launch, write ``/etc/<name>`` in the container, release and launch again:
        whether the file is still there."""
        written = f"{self.root}/storage/rootfs/{self.vm_id}-fs/etc/{name}"
        yield hypervisor.launch(self.spec("desk.tar.gz"))
        with open(written, "w") as f:
            f.write("x")
        yield hypervisor.release(self.vm_id)
        yield hypervisor.launch(self.spec("desk.tar.gz"))
        return os.path.exists(written)

    @defer.inlineCallbacks
    def test_the_upper_directory_is_set_aside_unless_persistent(self):
        overlays = f"{self.root}/storage/overlayfs"
        hypervisor = self.hypervisor()
        self.assertFalse((yield self.kept_across_a_restart(hypervisor, "written")))
        aside = [n for n in os.listdir(overlays) if n.startswith(f"deleteme-7-{self.vm_id}-")]
        self.assertEqual(len(aside), 1, os.listdir(overlays))

        yield hypervisor.release(self.vm_id)
        persistent = self.hypervisor(self.make_config(**{"vm.overlay.persistent": "1"}))
        self.assertTrue((yield self.kept_across_a_restart(persistent, "kept")))

    @defer.inlineCallbacks
    def test_the_manuals_unionfs_fuse_option(self):
        config = self.make_config(**{"vm.lxc.unionfs.type": "unionfs-fuse"})
        hypervisor = self.hypervisor(config)
        yield hypervisor.launch(self.spec("desk.tar.gz"))
        rootfs = f"{self.root}/storage/rootfs/{self.vm_id}-fs"
        with open("/proc/self/mounts") as f:
            self.assertIn(f" {rootfs} fuse.unionfs", f.read())
        with open(f"{rootfs}/etc/written", "w") as f:
            f.write("x")
        self.assertTrue(os.path.exists(f"{self.root}/storage/overlayfs/7-{self.vm_id}-overlayfs"
                                       "/etc/written"), "writes go to the upper directory")
        self.assertFalse(os.path.exists(f"{self.root}/storage/basefs/desk/etc/written"))
        yield hypervisor.release(self.vm_id)
        self.assertEqual(lxcfs.mounts_under(self.root), [])

    @defer.inlineCallbacks
    def test_a_failed_launch_leaves_nothing_behind(self):
        hypervisor = self.hypervisor()
        with self.assertRaises(LaunchError) as e:
            yield hypervisor.launch(self.spec("missing.tar.gz"))
        self.assertIn("missing.tar.gz is missing", str(e.exception))
        with self.assertRaises(LaunchError) as e:
            yield hypervisor.launch(self.spec("desk.tar.gz", ip="10.98.0.5"))
        self.assertIn("outside the VM range", str(e.exception))
        self.assertRaises(libvirt.libvirtError, self.domain)
        self.assertEqual(lxcfs.mounts_under(self.root), [])

    def test_the_network_keys_are_checked_at_start(self):
        with self.assertRaises(ConfigError) as e:
            NetworkPlan.from_config(Config({}))
        self.assertIn("vm.network.gateway is not set", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            NetworkPlan.from_config(Config({"vm.network.gateway": "10.0.0.200"}))
        self.assertIn("below vm.network.ip.start", str(e.exception))


class KVMTests(LibvirtTestCase):
    flavour = "kvm"

    def setUp(self) -> None:
        super().setUp()
        self.image = os.path.join(self.root, "storage", "images", "desk.qcow2")
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", self.image, "32M"], check=True)

    def info(self, path: str) -> dict:
        return json.loads(subprocess.run([QEMU_IMG, "info", "--output=json", "-U", path],
                                         capture_output=True, check=True).stdout)

    @defer.inlineCallbacks
    def test_launch_makes_an_overlay_and_a_home_image(self):
        config = self.make_config(**{"vm.serial.redirect": "1", "vm.vnc.redirect": "1",
                                     "vm.serial.capture": "1",
                                     "path.serial.captures": f"{self.root}/captures"})
        hypervisor = self.hypervisor(config)
        verifyObject(IHypervisor, hypervisor)
        vm = yield hypervisor.launch(self.spec("desk.qcow2"))
        overlay = f"{self.root}/storage/overlays/7-{self.vm_id}-overlay.qcow2"
        self.assertEqual(self.info(overlay)["backing-filename"], self.image)
        home = f"{self.root}/storage/homes/{self.vm_id}-data.qcow2"
        self.assertEqual(self.info(home)["virtual-size"], 64 * 1024 * 1024)
        self.assertGreater(vm.ports["serial"], 2000)
        xml = self.domain().XMLDesc(0)
        self.assertIn(f"<source file='{overlay}'", xml)
        self.assertIn("<model type='virtio'/>", xml)
        self.assertIn(f"<source dir='{self.root}/run/kvm/qvd-{self.vm_id}/config'/>", xml)
        with open(f"{self.root}/run/kvm/qvd-{self.vm_id}/domain.xml") as f:
            validate(self, f.read())
        with open(f"{self.root}/run/kvm/qvd-{self.vm_id}/config/vma.conf") as f:
            self.assertEqual(parse_properties(f.read())["vma.user.provisioning"], "1")

    @defer.inlineCallbacks
    def test_the_overlay_is_discarded_unless_persistent(self):
        overlay = f"{self.root}/storage/overlays/7-{self.vm_id}-overlay.qcow2"
        hypervisor = self.hypervisor()
        yield hypervisor.launch(self.spec("desk.qcow2"))
        yield hypervisor.release(self.vm_id)
        self.assertFalse(os.path.exists(overlay))

        persistent = self.hypervisor(self.make_config(**{"vm.overlay.persistent": "1"}))
        yield persistent.launch(self.spec("desk.qcow2"))
        first = os.stat(overlay).st_ino
        yield persistent.release(self.vm_id)
        yield persistent.launch(self.spec("desk.qcow2"))
        self.assertEqual(os.stat(overlay).st_ino, first)

    @defer.inlineCallbacks
    def test_without_overlay_the_di_is_used_read_only(self):
        hypervisor = self.hypervisor()
        yield hypervisor.launch(self.spec("desk.qcow2", use_overlay=False, user_storage_size=0))
        xml = self.domain().XMLDesc(0)
        self.assertIn(f"<source file='{self.image}'", xml)
        self.assertIn("<readonly/>", xml)
        self.assertEqual(os.listdir(f"{self.root}/storage/images/desk.qcow2.boot"),
                         ["lock", "none"], "no kernel in it: it boots from its disk")

    def test_every_option_validates(self):
        nic = domains.Nic("qvdnet", "54:52:00:00:00:01", "qvd42", "e1000")
        validate(self, domains.KVMDomain(
            "qvd-42", "qvd/42/desk", "kvm", 512, 2, "/d.qcow2", True, False, nic,
            home="/h.qcow2", boot=domains.DirectBoot("/k", "/i", "root=/dev/sda"),
            config_dir="/c", serial=domains.Serial(0, "/capture.txt"), balloon=True).to_xml())
