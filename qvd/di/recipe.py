"""What goes into a DI (pure: package lists, files and their text, cache keys).

Both flavours are Debian 12 with systemd, systemd-networkd asking DHCP for every
Ethernet interface, Debian's nxagent, a light desktop (twm and an xterm, the
``x-session-manager`` of the image) and this project's VMA as ``qvd-vma.service``
(``twistd qvd-vma``: Twisted in ``/usr/lib/qvd/python``, run by Debian's python3).
A KVM image adds a kernel, an initramfs with the virtio drivers, and mounts the
HKD's home image (label ``qvdhome``) on ``/home`` and its ``vma.conf`` share
(9p tag ``qvd.config``) on ``/etc/qvd``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

# Bump when what a build does changes, so cached base file systems are not reused.
RECIPE_VERSION = "2"
SUITE = "bookworm"
FLAVOURS = ("lxc", "kvm")
PYTHON_DIR = "/usr/lib/qvd/python"
COMMON_PACKAGES = (
    "systemd-sysv", "dbus", "iproute2", "ca-certificates", "python3",
    "nxagent", "xfonts-base", "xinit", "x11-xserver-utils", "xterm", "twm",
)
KVM_PACKAGES = ("linux-image-amd64", "udev", "initramfs-tools", "zstd")
# Modules the KVM initramfs needs to find its root on a virtio disk (MODULES=list
# keeps it small: a big initramfs costs seconds of boot under TCG).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "ata_piix", "sd_mod")
TWISTD = "from twisted.scripts.twistd import run; run()"


@dataclass(frozen=True)
class BaseSpec:
    """Everything the base file system (before our VMA is copied in) depends on."""

    flavour: str
    suite: str
    mirror: str
    packages: tuple[str, ...]
    python_requirements: tuple[str, ...]  # what pip puts in PYTHON_DIR
    recipe: str = RECIPE_VERSION

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def packages(flavour: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    wanted = list(COMMON_PACKAGES) + (list(KVM_PACKAGES) if flavour == "kvm" else [])
    return tuple(sorted(set(wanted) | {p.strip() for p in extra if p.strip()}))


VMA_SERVICE = f"""\
[Unit]
Description=QVD VM agent (SimpleRPC on port 3030, nxagent sessions)
After=local-fs.target
ConditionPathExists=/usr/lib/qvd/python/qvd

[Service]
Environment=PYTHONPATH={PYTHON_DIR}
ExecStartPre=/bin/mkdir -p /var/log/qvd /var/run/qvd
ExecStart=/usr/bin/python3 -c "{TWISTD}" --nodaemon --pidfile= --logfile=/var/log/qvd/qvd-vma.log qvd-vma
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

NETWORK = """\
[Match]
Type=ether

[Network]
DHCP=ipv4
"""

DESKTOP = """\
#!/bin/sh
# The image's desktop session (x-session-manager): a terminal under twm.
xterm -geometry 80x24+40+40 &
exec twm
"""

KVM_FSTAB = """\
# / is mounted by the initramfs (root= on the kernel command line)
LABEL=qvdhome /home ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2
qvd.config /etc/qvd 9p trans=virtio,version=9p2000.L,ro,nofail 0 0
"""


def files(flavour: str) -> Mapping[str, tuple[str, int]]:
    """Files written into the image: path -> (text, mode)."""
    written = {
        "/etc/systemd/system/qvd-vma.service": (VMA_SERVICE, 0o644),
        "/etc/systemd/network/80-qvd.network": (NETWORK, 0o644),
        "/usr/lib/qvd/bin/qvd-desktop": (DESKTOP, 0o755),
        "/etc/hostname": ("qvd-vm\n", 0o644),
        "/etc/hosts": ("127.0.0.1\tlocalhost\n127.0.1.1\tqvd-vm\n", 0o644),
    }
    if flavour == "kvm":
        written["/etc/fstab"] = (KVM_FSTAB, 0o644)
        written["/etc/initramfs-tools/conf.d/qvd"] = ("MODULES=list\nCOMPRESS=zstd\n", 0o644)
        written["/etc/initramfs-tools/modules"] = ("\n".join(INITRAMFS_MODULES) + "\n", 0o644)
    return written


# Commands run in the image (chroot) once its packages are in: the VMA gives its users
# vma.user.default.groups (qvduser).
CONFIGURE = (
    ("groupadd", "--system", "qvduser"),
    ("systemctl", "enable", "qvd-vma.service", "systemd-networkd.service"),
    ("update-alternatives", "--install", "/usr/bin/x-session-manager", "x-session-manager",
     "/usr/lib/qvd/bin/qvd-desktop", "90"),
)
