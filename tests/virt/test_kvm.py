"""KVM end to end: ``qvd-di build --flavour kvm`` boots as a QEMU guest (TCG where the
machine has no usable KVM, as here) straight into its kernel, gets its address from
dnsmasq, and its VMA answers ``x_state`` across the bridge; its overlay is discarded
when it stops (``vm.overlay.persistent = 0``) and its home image is kept."""

from __future__ import annotations

import os

import psutil
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from qvd.hkd.virt.hypervisor import kvm_usable
from tests.support import images
from tests.virt.support import VirtNodeTestCase


class KVMBootTests(VirtNodeTestCase):
    flavour = "kvm"
    plugin = "qvd-hkd"
    timeout = 900  # a cold cache builds the DI first; a TCG boot takes a minute or two

    @inlineCallbacks
    def test_a_guest_boots_and_its_vma_answers(self):
        image = yield threads.deferToThread(images.image, "kvm")
        yield self.add_vm(image, "memory=768,user_storage=64")
        yield self.start_node()
        accel = "KVM" if kvm_usable() else "QEMU's TCG"
        self.assertIn(f"KVM guests run with {accel}", self.node.output())

        self.qa(f"vm id={self.vm_id} start")
        yield self.wait_vm("running", 420)  # the HKD's VMA monitor had its first answer
        self.assertEqual((yield threads.deferToThread(self.rpc, "x_state")), "stopped")
        self.assertIn("qemu-system", psutil.Process(self.runtime()["vm_pid"]).name())
        xml = self.domain().XMLDesc(0)
        self.assertIn(f"<domain type='{'kvm' if accel == 'KVM' else 'qemu'}'", xml)
        self.assertIn("<kernel>", xml)  # direct kernel boot, no bootloader
        di_id = self.db.query("SELECT id FROM dis")[0][0]
        overlay = os.path.join(self.storage, "overlays", f"{di_id}-{self.vm_id}-overlay.qcow2")
        home = os.path.join(self.storage, "homes", f"{self.vm_id}-data.qcow2")
        self.assertTrue(os.path.exists(overlay))

        self.qa(f"vm id={self.vm_id} stop")
        yield self.wait_vm("stopped", 120)
        self.assertIsNone(self.domain())
        self.assertFalse(os.path.exists(overlay), "a non-persistent overlay is discarded")
        self.assertTrue(os.path.exists(home), "the home image stays")
