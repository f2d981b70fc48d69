"""Where a VM's files live on the node: paths only, no file work (so every backend and
its tests share one naming).

``VMFiles`` is the directory a backend keeps for one running VM (its ``vma.conf``,
state and logs).  ``Storage`` is the manual's storage folders with QVD 4's file names
in them (reference §5.2, §5.3, §8.2), so that what an earlier HKD (ours or QVD 4's)
left behind is found again under the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from qvd.config import Config

# What the LXC backend strips off a DI's file name to name its unpacked basefs.
TAR_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz", ".txz", ".tar")


def _in_directory(name: str, doc: str = "") -> property:
    """A ``VMFiles`` property: the path of ``name`` in the VM's directory."""
    return property(lambda files: os.path.join(files.directory, name), doc=doc or None)


@dataclass(frozen=True)
class VMFiles:
    """One VM's directory: ``vma.conf``, the backend's state file, logs."""

    directory: str

    @classmethod
    def under(cls, root: str, name: str) -> "VMFiles":
        return cls(os.path.join(root, name))

    conf = _in_directory("vma.conf")
    state = _in_directory("vm.json")
    run = _in_directory("run")
    log = _in_directory("log")
    pid = _in_directory("vma.pid")
    logfile = _in_directory("vma.log")
    out = _in_directory("vma.out", "The VM's own stdout and stderr.")
    domain = _in_directory("domain.xml",
                           "The libvirt domain XML as last defined (for the admin to read).")


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
        """Each field is its ``path.storage.<field>`` key."""
        return cls(*(config.get(f"path.storage.{field.name}") for field in fields(cls)))

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
