"""Building a DI: debootstrap a Debian base (cached by what it depends on), copy this
project's VMA in, and write the LXC tarball or the KVM qcow2 disk.

The base file system (packages, Twisted, configuration) is cached as a tarball in the
cache directory under a hash of everything it depends on, so a second build, or one
after a code change, only copies the VMA and writes the image.  Needs root
(debootstrap, chroot) and Debian's debootstrap, e2fsprogs and qemu-utils.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Sequence

import qvd
from qvd.di import recipe

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CACHE = "/var/cache/qvd-di"
SOURCES = ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list")
# Free space left in a KVM image's root file system, beyond what its files take.
KVM_FREE_BYTES = 1024 ** 3
_COMPRESS = {".tar.gz": "-z", ".tgz": "-z", ".tar.xz": "-J", ".txz": "-J", ".tar.bz2": "-j",
             ".tbz": "-j", ".tar": ""}

UNSAFE_IO = "/etc/dpkg/dpkg.cfg.d/qvd-unsafe-io"

Log = Callable[[str], None]


class BuildError(Exception):
    """The build cannot go on; the message says why."""


def node_mirror() -> str:
    """The Debian mirror this node's apt uses (so a build reaches what apt reaches)."""
    for path in SOURCES:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        match = (re.search(r"^URIs:\s*(\S+)", text, re.M)
                 or re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+\s+main", text, re.M))
        if match and "security" not in match.group(1):
            return match.group(1)
    return DEFAULT_MIRROR


def base_spec(flavour: str, extra: Sequence[str], mirror: str) -> recipe.BaseSpec:
    twisted = importlib.metadata.version("Twisted")
    return recipe.BaseSpec(flavour, recipe.SUITE, mirror, recipe.packages(flavour, extra),
                           (f"Twisted=={twisted}",))


def build(flavour: str, out: str, extra: Sequence[str] = (), mirror: str = "",
          cache: str = DEFAULT_CACHE, log: Log = print) -> str:
    """Write the DI to ``out`` (LXC: a .tar[.gz|.xz|.bz2]; KVM: a .qcow2)."""
    if flavour not in recipe.FLAVOURS:
        raise BuildError(f"unknown flavour {flavour!r} (use {' or '.join(recipe.FLAVOURS)})")
    out = os.path.abspath(out)
    if flavour == "lxc" and _compression(out) is None:
        raise BuildError(f"{out}: an LXC DI is a tarball (.tar, .tar.gz, .tgz, .tar.xz, ...)")
    if os.geteuid() != 0:
        raise BuildError("run qvd-di build as root (debootstrap and chroot need it)")
    mirror = mirror or node_mirror()
    os.makedirs(cache, exist_ok=True)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qvd-di-", dir=os.path.dirname(out)) as scratch:
        root = os.path.join(scratch, "rootfs")
        _base(flavour, extra, mirror, cache, root, log)
        install_vma(root)
        partial = os.path.join(scratch, "image")
        if flavour == "lxc":
            log(f"writing {out}")
            _run(["tar", "-c", *filter(None, [_compression(out)]), "--numeric-owner", "-f",
                  partial, "-C", root, "."])
        else:
            _write_disk(root, partial, log)
        os.replace(partial, out)
    return out


def _compression(path: str) -> str | None:
    for suffix, flag in _COMPRESS.items():
        if path.endswith(suffix):
            return flag
    return None


def _base(flavour: str, extra: Sequence[str], mirror: str, cache: str, root: str,
          log: Log) -> None:
    """The flavour's base file system in ``root``, from the cache or made (and cached).

    A KVM base is the LXC base (of the same extra packages) plus a kernel, so one
    debootstrap serves both flavours.
    """
    spec = base_spec(flavour, extra, mirror)
    cached = os.path.join(cache, f"rootfs-{flavour}-{spec.key()}.tar")
    if os.path.exists(cached):
        log(f"base file system from the cache: {cached}")
        os.makedirs(root)
        _run(["tar", "-x", "--numeric-owner", "-f", cached, "-C", root])
        return
    if flavour == "kvm":
        _base("lxc", extra, mirror, cache, root, log)
        _add_kernel(root, log)
    else:
        _debootstrap(spec, root, cache, log)
    _run(["tar", "-c", "--numeric-owner", "-f", cached + ".partial", "-C", root, "."])
    os.replace(cached + ".partial", cached)


def _debootstrap(spec: recipe.BaseSpec, root: str, cache: str, log: Log) -> None:
    """Debian with the packages, Twisted and the configuration of ``recipe``.

    Two stages, so that dpkg in the second runs with ``force-unsafe-io`` (no fsync per
    file: the image is written whole at the end anyway).
    """
    log(f"debootstrap {spec.suite} from {spec.mirror} ({len(spec.packages)} packages asked)")
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    _run(["debootstrap", "--foreign", "--variant=minbase",
          f"--include={','.join(spec.packages)}", f"--cache-dir={debs}", spec.suite, root,
          spec.mirror])
    _write(root, UNSAFE_IO, "force-unsafe-io\n", 0o644)
    _chroot(root, ["/debootstrap/debootstrap", "--second-stage"])
    for path, (text, mode) in recipe.files("lxc").items():
        _write(root, path, text, mode)
    log(f"installing {', '.join(spec.python_requirements)} into {recipe.PYTHON_DIR}")
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "--no-compile", "--target", root + recipe.PYTHON_DIR, *spec.python_requirements])
    for command in recipe.CONFIGURE:
        _chroot(root, list(command))
    _clean(root)


def _add_kernel(root: str, log: Log) -> None:
    for path, (text, mode) in recipe.files("kvm").items():
        _write(root, path, text, mode)
    log(f"installing {', '.join(recipe.KVM_PACKAGES)}")
    _write(root, UNSAFE_IO, "force-unsafe-io\n", 0o644)
    with _chroot_mounts(root):
        _chroot(root, ["apt-get", "update", "-q"])
        _chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                       "-o", "Dpkg::Options::=--force-confold", *recipe.KVM_PACKAGES])
    _clean(root)


def _clean(root: str) -> None:
    """What the image does not need: apt's downloads and lists, our dpkg setting."""
    os.unlink(root + UNSAFE_IO)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in os.scandir(os.path.join(root, leftover)):
            if entry.is_file():
                os.unlink(entry.path)


def install_vma(root: str) -> None:
    """This checkout's ``qvd`` package and its twistd plugins, as the node runs them."""
    target = root + recipe.PYTHON_DIR
    package = os.path.dirname(os.path.abspath(qvd.__file__))
    shutil.rmtree(os.path.join(target, "qvd"), ignore_errors=True)
    shutil.copytree(package, os.path.join(target, "qvd"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    plugin = importlib.util.find_spec("twisted.plugins.qvd_services")
    if plugin is None or plugin.origin is None:
        raise BuildError("the qvd twistd plugins (twisted/plugins/qvd_services.py) are missing")
    shutil.copy(plugin.origin, os.path.join(target, "twisted", "plugins"))


def _write_disk(root: str, partial: str, log: Log) -> None:
    used = int(subprocess.run(["du", "-sb", root], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    size_mb = (used * 12 // 10 + KVM_FREE_BYTES) // (1024 * 1024)
    raw = partial + ".raw"
    log(f"writing a {size_mb} MB ext4 root file system")
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "qvdroot", "-d", root, raw, f"{size_mb}M"])
    _run(["qemu-img", "convert", "-O", "qcow2", raw, partial])
    os.unlink(raw)


def _write(root: str, path: str, text: str, mode: int) -> None:
    full = root + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(full, mode)


class _chroot_mounts:
    """/proc, /sys, /dev and the node's resolv.conf in the image while apt runs there;
    no service starts (policy-rc.d)."""

    def __init__(self, root: str):
        self.root = root
        self.mounted: list[str] = []

    def __enter__(self) -> None:
        _write(self.root, "/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
        shutil.copy("/etc/resolv.conf", os.path.join(self.root, "etc", "resolv.conf"))
        for source, point, kind in (("proc", "proc", "proc"), ("sysfs", "sys", "sysfs"),
                                    ("/dev", "dev", None)):
            target = os.path.join(self.root, point)
            _run(["mount", "--bind", source, target] if kind is None
                 else ["mount", "-t", kind, source, target])
            self.mounted.append(target)

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", target])
        os.unlink(os.path.join(self.root, "usr", "sbin", "policy-rc.d"))
        os.unlink(os.path.join(self.root, "etc", "resolv.conf"))


def _chroot(root: str, argv: list[str]) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    _run(["chroot", root, *argv], env)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, env=env)
    except OSError as e:
        raise BuildError(f"cannot run {argv[0]}: {e.strerror}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-1500:]
        raise BuildError(f"{' '.join(argv[:3])} ... failed (status {done.returncode}):\n{output}")
