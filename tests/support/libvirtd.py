"""A real, private libvirtd for the tests, in a network namespace of the test's own.

The daemon runs in that network namespace (where the HKD plugs VMs into its bridge
and runs dnsmasq) and in a mount namespace of its own, where:

- ``/sys/fs/cgroup/unified`` is unmounted (libvirt's LXC driver cannot run on this
  kernel's hybrid cgroup layout with it);
- ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``, ``/var/log/libvirt`` and
  ``/var/cache/libvirt`` are directories of the test's, so no system libvirtd is
  touched and nothing outlives the test;
- the storage directory is a shared mount, so the overlay file systems the HKD
  mounts there for containers reach the daemon (this machine's root mount is
  private; a systemd host shares it anyway).

Clients reach it at ``lxc:///system?socket=...`` and ``qemu:///system?socket=...``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Optional

from qvd.hkd.virt.lxcfs import mounts_under

LIBVIRTD = "/usr/sbin/libvirtd"
START_WAIT = 30.0


def available() -> Optional[str]:
    """None if a private libvirtd can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in (LIBVIRTD, shutil.which("unshare"), shutil.which("nsenter"), shutil.which("ip")):
        if not tool or not os.path.exists(tool):
            return "needs libvirtd, unshare, nsenter and iproute2"
    return None


class PrivateLibvirtd:
    def __init__(self, directory: str, storage: str, netns: str):
        self.directory = directory
        self.storage = storage
        self.netns = netns
        self.process: Optional[subprocess.Popen] = None

    @property
    def socket(self) -> str:
        return os.path.join(self.directory, "run", "libvirt-sock")

    def uri(self, driver: str) -> str:
        return f"{driver}:///system?socket={self.socket}"

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        os.makedirs(self.storage, exist_ok=True)
        subprocess.run(["mount", "--bind", self.storage, self.storage], check=True)
        subprocess.run(["mount", "--make-shared", self.storage], check=True)
        for name in ("run", "lib", "log", "cache"):
            os.makedirs(os.path.join(self.directory, name), exist_ok=True)
        shutil.copytree("/etc/libvirt", os.path.join(self.directory, "etc"), dirs_exist_ok=True)
        with open(os.path.join(self.directory, "etc", "qemu.conf"), "a") as f:
            # no virtlogd: QEMU's output goes straight to /var/log/libvirt/qemu
            f.write('\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
                    'stdio_handler = "file"\n')
        d = self.directory
        script = "\n".join([
            "set -e",
            "umount /sys/fs/cgroup/unified 2>/dev/null || true",
            f"mount --bind {d}/etc /etc/libvirt",
            "mkdir -p /run/libvirt",
            f"mount --bind {d}/run /run/libvirt",
            f"mount --bind {d}/lib /var/lib/libvirt",
            f"mount --bind {d}/log /var/log/libvirt",
            f"mount --bind {d}/cache /var/cache/libvirt",
            f"exec {LIBVIRTD}",
        ])
        log = open(os.path.join(d, "libvirtd.log"), "ab")
        self.process = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "unshare", "--mount",
             "--propagation", "slave", "sh", "-c", script],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_WAIT
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"libvirtd did not start; see {d}/libvirtd.log")
            time.sleep(0.1)

    def stop(self) -> None:
        """Every domain destroyed, the daemon ended, mounts and namespace removed."""
        if self.process is not None and self.process.poll() is None:
            for driver in ("lxc", "qemu"):
                names = subprocess.run(["virsh", "-c", self.uri(driver), "list", "--all",
                                        "--name"], capture_output=True, text=True).stdout
                for name in names.split():
                    subprocess.run(["virsh", "-c", self.uri(driver), "destroy", name],
                                   capture_output=True)
                    subprocess.run(["virsh", "-c", self.uri(driver), "undefine", name],
                                   capture_output=True)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:  # dnsmasq or a VMA an HKD killed by the test left behind
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        for point in sorted(mounts_under(self.storage), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def in_netns(self) -> list[str]:
        """The prefix that runs a command in the daemon's network namespace (and ours for
        the rest: its mounts stay visible)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"]
