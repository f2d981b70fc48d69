"""Where a VM's files live on the node: paths only, no file work (so every backend and
its tests share one naming).

``VMFiles`` is the directory a backend keeps for one running VM (its ``vma.conf``,
state and logs).  ``Storage`` is the manual's storage folders with QVD 4's file names
in them (reference §5.2, §5.3, §8.2), so that what an earlier HKD (ours or QVD 4's)
left behind is found again under the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qvd.config import Config

# What the LXC backend strips off a DI's file name to name its unpacked basefs.
TAR_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz", ".txz", ".tar")


@dataclass(frozen=True)
class VMFiles:
    """One VM's directory: ``vma.conf``, the backend's state file, logs."""

    directory: str

    @classmethod
    def under(cls, root: str, name: str) -> "VMFiles":
        return cls(os.path.join(root, name))

    @property
    def conf(self) -> str:
        return os.path.join(self.directory, "vma.conf")

    @property
    def state(self) -> str:
        return os.path.join(self.directory, "vm.json")

    @property
    def run(self) -> str:
        return os.path.join(self.directory, "run")

    @property
    def log(self) -> str:
        return os.path.join(self.directory, "log")

    @property
    def pid(self) -> str:
        return os.path.join(self.directory, "vma.pid")

    @property
    def logfile(self) -> str:
        return os.path.join(self.directory, "vma.log")

    @property
    def out(self) -> str:
        """The VM's own stdout and stderr."""
        return os.path.join(self.directory, "vma.out")

    @property
    def domain(self) -> str:
        """The libvirt domain XML as last defined (for the admin to read)."""
        return os.path.join(self.directory, "domain.xml")


def strip_tar_suffix(name: str) -> str:
    for suffix in TAR_SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


@dataclass(frozen=True)
class Storage:
    """``path.storage.*``: DIs, KVM overlays and home images, LXC file systems."""

    images: str
    overlays: str
    homes: str
    basefs: str
    overlayfs: str
    homefs: str
    rootfs: str

    @classmethod
    def from_config(cls, config: Config) -> "Storage":
        get = config.get
        return cls(get("path.storage.images"), get("path.storage.overlays"),
                   get("path.storage.homes"), get("path.storage.basefs"),
                   get("path.storage.overlayfs"), get("path.storage.homefs"),
                   get("path.storage.rootfs"))

    def image(self, di_path: str) -> str:
        return os.path.join(self.images, di_path)

    # -- KVM ---------------------------------------------------------------------------
    def kvm_overlay(self, di_id: int, vm_id: int) -> str:
        return os.path.join(self.overlays, f"{di_id}-{vm_id}-overlay.qcow2")

    def kvm_home(self, vm_id: int) -> str:
        return os.path.join(self.homes, f"{vm_id}-data.qcow2")

    def kvm_boot(self, di_path: str) -> str:
        """Where the kernel and initrd of a DI booted without a bootloader are kept."""
        return os.path.join(self.images, f"{di_path}.boot")

    # -- LXC ---------------------------------------------------------------------------
    def lxc_base(self, di_path: str) -> str:
        return os.path.join(self.basefs, strip_tar_suffix(di_path))

    def lxc_untar_lock(self, di_path: str) -> str:
        return os.path.join(self.basefs, f"lock.{strip_tar_suffix(di_path)}")

    def lxc_upper(self, di_id: int, vm_id: int) -> str:
        return os.path.join(self.overlayfs, f"{di_id}-{vm_id}-overlayfs")

    def lxc_work(self, vm_id: int) -> str:
        return os.path.join(self.overlayfs, f"{vm_id}-overlayfs-work")

    def lxc_rootfs(self, vm_id: int) -> str:
        return os.path.join(self.rootfs, f"{vm_id}-fs")

    def lxc_home(self, vm_id: int, login: str, per_user: bool) -> str:
        return os.path.join(self.homefs, login if per_user else f"{vm_id}-fs")
