"""An LXC VM's file systems, as the manual's LXC chapter lays them out (reference §5.3).

The DI tarball is unpacked once into ``basefs`` (under a lock, into a temporary
directory renamed when complete); each VM gets a writable upper directory in
``overlayfs`` over it, mounted on its ``rootfs`` mount point with kernel overlayfs
(or unionfs-fuse, ``vm.lxc.unionfs.type``), and a home directory in ``homefs``.  A
non-persistent VM's old upper directory is moved aside as ``deleteme-...`` (the manual:
kept to debug a VM that did not start; we keep the newest one per VM, QVD 4 kept all).
Everything here blocks (tar, mount, file work): call it in a thread.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import time
from dataclasses import dataclass
from typing import Optional

from qvd.config import Config
from qvd.hkd.commands import blocking
from qvd.files import replace
from qvd.hkd.hypervisor import LaunchError
from qvd.hkd.layout import Storage

UNIONFS_TYPES = ("overlayfs", "unionfs-fuse")
_TAR_FLAGS = {".gz": "-z", ".tgz": "-z", ".bz2": "-j", ".tbz": "-j", ".xz": "-J", ".txz": "-J"}


@dataclass(frozen=True)
class LXCStorageSettings:
    storage: Storage
    persistent: bool
    unionfs: str
    overlay_type: str  # the kernel file system name (vm.lxc.unionfs.overlayfs.module.name)
    per_user_home: bool
    tar: str
    mount: str
    umount: str
    unionfs_fuse: str
    untar_timeout: float
    umount_timeout: float

    @classmethod
    def from_config(cls, config: "Config") -> "LXCStorageSettings":
        unionfs = config.get("vm.lxc.unionfs.type").strip()
        if unionfs not in UNIONFS_TYPES:
            raise LaunchError(f"vm.lxc.unionfs.type = {unionfs!r} is not available"
                              f" (available: {', '.join(UNIONFS_TYPES)})")
        return cls(Storage.from_config(config), config.get_bool("vm.overlay.persistent"),
                   unionfs, config.get("vm.lxc.unionfs.overlayfs.module.name").strip(),
                   config.get_bool("vm.lxc.home.per.user"), config.get("command.tar"),
                   config.get("command.mount"), config.get("command.umount"),
                   config.get("command.unionfs"),
                   config.get_float("internal.hkd.lxc.untar.timeout"),
                   config.get_float("internal.hkd.lxc.killer.umount.timeout"))


@dataclass(frozen=True)
class LXCRoot:
    rootfs: str
    home: Optional[tuple[str, str]]  # (directory in homefs, mount point in the guest)


def prepare(settings: LXCStorageSettings, vm_id: int, di_id: int, di_path: str, login: str,
            home_size: Optional[int], vma_conf: str) -> LXCRoot:
    """The VM's root file system mounted, its home directory and its ``/etc/qvd/vma.conf``."""
    storage = settings.storage
    lower = _lower(unpack(settings, di_path))
    for directory in (storage.overlayfs, storage.rootfs, storage.homefs):
        os.makedirs(directory, exist_ok=True)
    work = storage.lxc_work(vm_id)
    _set_aside(work, os.path.join(storage.overlayfs, f"deleteme-work-{vm_id}-{_tag()}"))
    os.makedirs(work)
    upper = storage.lxc_upper(di_id, vm_id)
    if not settings.persistent:
        _set_aside(upper, os.path.join(storage.overlayfs, f"deleteme-{di_id}-{vm_id}-{_tag()}"))
    os.makedirs(upper, exist_ok=True)
    _prune_set_aside(storage.overlayfs, vm_id, di_id)
    rootfs = storage.lxc_rootfs(vm_id)
    unmount_all(settings, rootfs)  # left mounted by an HKD that died
    os.makedirs(rootfs, exist_ok=True)
    if settings.unionfs == "overlayfs":
        blocking([settings.mount, "-t", settings.overlay_type, "-o",
                  f"rw,upperdir={upper},lowerdir={lower},workdir={work}",
                  settings.overlay_type, rootfs], "mounting the root file system", 60)
    else:
        blocking([settings.unionfs_fuse, "-o", "cow,allow_other,suid,dev,nonempty",
                  f"{upper}=RW:{lower}=RO", rootfs], "mounting the root file system", 60)
    try:
        conf_dir = os.path.join(rootfs, "etc", "qvd")
        os.makedirs(conf_dir, exist_ok=True)
        replace(os.path.join(conf_dir, "vma.conf"), vma_conf, 0o600)
        home = None
        if home_size:
            source = storage.lxc_home(vm_id, login, settings.per_user_home)
            os.makedirs(source, mode=0o755, exist_ok=True)
            home = (source, f"/home/{login}" if settings.per_user_home else "/home")
    except OSError:
        unmount_all(settings, rootfs)
        raise
    return LXCRoot(rootfs, home)


def unpack(settings: LXCStorageSettings, di_path: str) -> str:
    """The DI unpacked in ``basefs`` (once per DI, whoever asks first, under its lock)."""
    storage = settings.storage
    image = storage.image(di_path)
    base = storage.lxc_base(di_path)
    if base == image:
        raise LaunchError(f"DI {di_path} is not a tarball (.tar, .tar.gz, .tgz, ...)")
    os.makedirs(storage.basefs, exist_ok=True)
    with open(storage.lxc_untar_lock(di_path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(base):
            return base
        if not os.path.exists(image):
            raise LaunchError(f"DI file {image} is missing")
        partial = os.path.join(storage.basefs, f"untar-{_tag()}")
        os.makedirs(partial)
        try:
            flag = [f for suffix, f in _TAR_FLAGS.items() if image.endswith(suffix)]
            blocking([settings.tar, "-x", *flag, "--numeric-owner", "-f", image, "-C", partial],
                     f"unpacking {image}", settings.untar_timeout)
            os.rename(partial, base)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return base


def _lower(base: str) -> str:
    """A basic image is the root itself; an extended one has it under ``rootfs/``."""
    if os.path.isdir(os.path.join(base, "sbin")):
        return base
    if os.path.isdir(os.path.join(base, "rootfs", "sbin")):
        return os.path.join(base, "rootfs")
    raise LaunchError(f"{base} holds no root file system (no sbin/ nor rootfs/sbin/)")


def unmount_all(settings: LXCStorageSettings, rootfs: str) -> None:
    """Every mount at or below ``rootfs``, deepest first; ``LaunchError`` if one stays."""
    for point in sorted(mounts_under(rootfs), key=len, reverse=True):
        blocking([settings.umount, point], f"unmounting {point}", settings.umount_timeout)
    left = mounts_under(rootfs)
    if left:
        raise LaunchError(f"still mounted: {', '.join(left)}")


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    path = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == path or point.startswith(path + "/"):
                points.append(point)
    return points


def _set_aside(path: str, deleteme: str) -> None:
    if os.path.exists(path):
        os.rename(path, deleteme)


def _prune_set_aside(overlayfs: str, vm_id: int, di_id: int) -> None:
    """Keep the newest ``deleteme-`` directory of each kind for this VM."""
    for prefix in (f"deleteme-{di_id}-{vm_id}-", f"deleteme-work-{vm_id}-"):
        old = sorted((os.path.join(overlayfs, name) for name in os.listdir(overlayfs)
                      if name.startswith(prefix)), key=os.path.getmtime)
        for path in old[:-1]:
            shutil.rmtree(path, ignore_errors=True)


def _tag() -> str:
    return f"{os.getpid()}-{int(time.time())}-{random.randrange(1 << 30)}"
