"""LXC end to end: ``qvd-di build --flavour lxc``, ``qa di new``, and alice's desktop in a
container of its own (libvirt), at an IP dnsmasq gave it, through the L7R with
``qvd-client``; suspend and resume, stop, restart with her home kept, and an HKD killed
with SIGKILL that adopts the running container when it comes back."""

from __future__ import annotations

import os
import re
import subprocess

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from tests.support.paths import ARTIFACTS
from tests.support.x11 import screenshot, start_xvfb
from tests.support import images
from tests.virt.support import BRIDGE, VirtNodeTestCase


def desktop_window(display: str):
    """The nxagent desktop on the client's screen: its biggest top-level window (the
    image's session is twm and an xterm, shown whole, not rootless)."""
    tree = subprocess.run(["xwininfo", "-root", "-children", "-display", display],
                          capture_output=True, text=True).stdout
    best = None
    for match in re.finditer(r"\s(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)", tree):
        w, h, x, y = (int(v) for v in match.groups())
        if w >= 200 and h >= 200 and (best is None or w * h > best[2] * best[3]):
            best = (max(x, 0), max(y, 0), w, h)
    return best


def in_container(init_pid: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(init_pid), "-m", "-n", "-u", "-i", "-p",
                           *argv], capture_output=True, text=True)


def container_init(controller_pid: int) -> int:
    """The container's init: the child of libvirt_lxc (vm_runtimes.vm_pid)."""
    with open(f"/proc/{controller_pid}/task/{controller_pid}/children") as f:
        return int(f.read().split()[0])


class LXCDesktopTests(VirtNodeTestCase):
    flavour = "lxc"
    timeout = 900  # a cold cache builds the DI first

    @inlineCallbacks
    def test_a_desktop_in_a_container(self):
        image = yield threads.deferToThread(images.image, "lxc")
        yield self.add_vm(image)
        yield self.start_node()
        display = yield start_xvfb(self)

        first = self.client("-o", display=display)
        region = yield self.wait(lambda: first.ended.called or desktop_window(display),
                                 bool, 180, "desktop window")
        self.assertIsNot(region, True, f"qvd-client exited{self.explain(first)}")
        # the window maps first, twm's frame and the xterm are drawn a moment later
        yield self.wait(lambda: screenshot(display, region,
                                           os.path.join(ARTIFACTS, "lxc-desktop.png")),
                        lambda colours: len(colours - {"#000000"}) > 1, 60, "desktop drawn")

        row = self.runtime()
        self.assertEqual((row["vm_state"], row["user_state"], row["vm_vma_port"],
                          row["vm_x_port"]), ("running", "connected", 3030, 4100))
        self.assertTrue(row["vm_address"].startswith("10.81."))
        init = container_init(row["vm_pid"])
        eth0 = in_container(init, "ip", "-4", "addr", "show", "eth0").stdout
        self.assertRegex(eth0, rf"inet {re.escape(row['vm_address'])}/16 .*dynamic")  # DHCP
        with open(os.path.join(self.root, "log", "qvd-dnsmasq.log")) as f:
            self.assertIn(f"DHCPACK({BRIDGE}) {row['vm_address']}", f.read())
        self.assertNotEqual(in_container(init, "hostname").stdout, os.uname().nodename)

        # suspend (the client goes) and resume (it comes back to the same session)
        first.transport.signalProcess("TERM")
        self.assertEqual((yield first.ended), 0, first.stderr)
        yield self.wait(lambda: self.rpc("x_state"), lambda s: s == "suspended", 30,
                        "x_state suspended")
        again = self.client("-o", display=display)
        yield self.wait(lambda: again.ended.called or desktop_window(display), bool, 60,
                        "desktop window again")
        yield self.wait(lambda: self.rpc("x_state"), lambda s: s == "connected", 30,
                        "x_state connected")
        again.transport.signalProcess("TERM")
        yield again.ended

        # alice's home is hers across restarts; the container is gone after stop
        written = in_container(init, "sh", "-c", "echo kept > /home/alice/kept")
        self.assertEqual(written.returncode, 0, written.stderr)
        self.qa(f"vm id={self.vm_id} stop")
        yield self.wait_vm("stopped", 60)
        self.assertIsNone(self.domain())
        rootfs = os.path.join(self.storage, "rootfs", f"{self.vm_id}-fs")
        self.assertFalse(os.path.ismount(rootfs))

        self.qa(f"vm id={self.vm_id} start")
        yield self.wait_vm("running", 120)
        init = container_init(self.runtime()["vm_pid"])
        self.assertEqual(in_container(init, "cat", "/home/alice/kept").stdout, "kept\n")

        # an HKD killed outright adopts the running container when it comes back
        domain_id = self.domain().ID()
        yield self.node.kill("KILL")
        yield self.start_node()
        yield self.wait(lambda: self.node.output(),
                        lambda out: f"adopted VM {self.vm_id}" in out, 30, "adoption")
        self.assertEqual((self.runtime()["vm_state"], self.domain().ID()),
                         ("running", domain_id))
        self.assertEqual((yield threads.deferToThread(self.rpc, "ping")), "1")
