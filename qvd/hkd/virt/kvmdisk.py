"""A KVM VM's disks (reference §5.2) and how it boots.

The DI in ``path.storage.images`` is the backing file of a copy-on-write overlay per VM
in ``path.storage.overlays`` (``<di>-<vm>-overlay.qcow2``: reused when
``vm.overlay.persistent`` is set, else made anew at every start), or is used itself,
read-only, when the OSF has no overlay.  A home image ``<vm>-data.qcow2`` of the OSF's
``user_storage_size`` MB is created once in ``path.storage.homes``, formatted ext4 with
the label ``qvdhome`` (the images ``qvd-di`` builds mount it on ``/home``).

A DI holding one ext2/3/4 file system with ``/vmlinuz`` and ``/initrd.img`` (what
``qvd-di build --flavour kvm`` makes) boots with libvirt's direct kernel boot: both are
copied out once into ``<images>/<di>.boot/``.  Any other DI boots from its own disk.
Everything here blocks: call it in a thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

from qvd.config import Config
from qvd.hkd.commands import blocking
from qvd.hkd.hypervisor import LaunchError
from qvd.hkd.layout import Storage

HOME_LABEL = "qvdhome"
NO_KERNEL = "none"  # marker in <di>.boot/: this DI boots from its own disk
_LINK = re.compile(r'Fast link dest: "([^"]+)"')


@dataclass(frozen=True)
class KVMStorageSettings:
    storage: Storage
    persistent: bool
    qemu_img: str
    mke2fs: str
    debugfs: str
    timeout: float

    @classmethod
    def from_config(cls, config: Config) -> "KVMStorageSettings":
        return cls(Storage.from_config(config), config.get_bool("vm.overlay.persistent"),
                   config.get("command.kvm-img"), config.get("command.mke2fs"),
                   config.get("command.debugfs"),
                   config.get_float("internal.hkd.kvm.disk.timeout"))


@dataclass(frozen=True)
class KVMDisks:
    disk: str
    readonly: bool
    home: Optional[str]
    kernel: Optional[tuple[str, str]]  # (kernel, initrd) for direct boot


def prepare(settings: KVMStorageSettings, vm_id: int, di_id: int, di_path: str,
            use_overlay: bool, home_size: Optional[int]) -> KVMDisks:
    storage = settings.storage
    image = storage.image(di_path)
    if not os.path.isfile(image):
        raise LaunchError(f"DI file {image} is missing")
    disk = image
    if use_overlay:
        disk = storage.kvm_overlay(di_id, vm_id)
        if not (settings.persistent and os.path.exists(disk)):
            os.makedirs(storage.overlays, exist_ok=True)
            if os.path.exists(disk):
                os.unlink(disk)
            backing = _format(settings, image)
            blocking([settings.qemu_img, "create", "-q", "-f", "qcow2", "-F", backing,
                                "-b", image, disk], "creating the overlay", settings.timeout)
    home = None
    if home_size:
        home = storage.kvm_home(vm_id)
        if not os.path.exists(home):
            _create_home(settings, home, home_size)
    return KVMDisks(disk, not use_overlay, home, boot_files(settings, di_path))


def discard_overlay(settings: KVMStorageSettings, vm_id: int, di_id: int) -> None:
    """A non-persistent VM's overlay, once the VM is gone (it is made anew at each start)."""
    if not settings.persistent:
        try:
            os.unlink(settings.storage.kvm_overlay(di_id, vm_id))
        except FileNotFoundError:
            pass


def boot_files(settings: KVMStorageSettings, di_path: str) -> Optional[tuple[str, str]]:
    """(kernel, initrd) copied out of the DI once, or None: it boots from its disk."""
    directory = settings.storage.kvm_boot(di_path)
    kernel, initrd = os.path.join(directory, "vmlinuz"), os.path.join(directory, "initrd.img")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (os.path.exists(kernel) or os.path.exists(os.path.join(directory, NO_KERNEL))):
            _extract_kernel(settings, settings.storage.image(di_path), directory)
    return (kernel, initrd) if os.path.exists(kernel) else None


def _extract_kernel(settings: KVMStorageSettings, image: str, directory: str) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        raw = os.path.join(scratch, "disk.raw")
        blocking([settings.qemu_img, "convert", "-O", "raw", image, raw], "reading the DI",
                 settings.timeout)
        found = {}
        for name in ("vmlinuz", "initrd.img"):
            target = _follow(settings, raw, "/" + name)
            out = os.path.join(scratch, name)
            if target:
                blocking([settings.debugfs, "-R", f"dump {target} {out}", raw],
                         f"copying {name} out of the DI", settings.timeout)
            if os.path.getsize(out) if os.path.exists(out) else 0:
                found[name] = out
        if len(found) == 2:
            for name, path in found.items():
                os.replace(path, os.path.join(directory, name))
        else:
            open(os.path.join(directory, NO_KERNEL), "w").close()


def _follow(settings: KVMStorageSettings, raw: str, path: str) -> Optional[str]:
    """``path`` in the file system of ``raw``, symbolic links (Debian's) followed once."""
    done = subprocess.run([settings.debugfs, "-R", f"stat {path}", raw], capture_output=True,
                          text=True, timeout=settings.timeout)
    if "Type: regular" in done.stdout:
        return path
    link = _LINK.search(done.stdout)
    if link is None:
        return None
    target = link.group(1)
    return target if target.startswith("/") else "/" + target


def _format(settings: KVMStorageSettings, image: str) -> str:
    out = blocking([settings.qemu_img, "info", "--output=json", image], "reading the DI",
                   settings.timeout)
    try:
        return str(json.loads(out)["format"])
    except (ValueError, KeyError):
        raise LaunchError(f"qemu-img cannot tell the format of {image}") from None


def _create_home(settings: KVMStorageSettings, home: str, size_mb: int) -> None:
    os.makedirs(os.path.dirname(home), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(home)) as scratch:
        raw = os.path.join(scratch, "home.raw")
        with open(raw, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        blocking([settings.mke2fs, "-q", "-F", "-t", "ext4", "-L", HOME_LABEL, raw],
                 "formatting the home image", settings.timeout)
        partial = os.path.join(scratch, "home.qcow2")
        blocking([settings.qemu_img, "convert", "-O", "qcow2", raw, partial],
                 "creating the home image", settings.timeout)
        os.replace(partial, home)
