"""libvirt domain XML for QVD's VMs, from typed descriptions: no I/O, so each flavour's
XML is checked against libvirt's schema (``virt-xml-validate``) in the tests.

Every domain is named ``qvd-<vm id>`` (QVD 4's LXC container name) and titled
``qvd/<vm id>/<vm name>`` (QVD 4's ``kvm -name``); its NIC is ``qvd<vm id>`` on the
host, plugged into ``vm.network.bridge`` with QVD 4's MAC.  A guest that powers off,
reboots or crashes is gone, as QVD 4's kvm process or container was.
"""

from __future__ import annotations

import re
import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

NAME_PREFIX = "qvd-"
# The 9p mount tag a KVM guest mounts read-only on /etc/qvd (its vma.conf).
CONFIG_TAG = "qvd.config"
_NAME = re.compile(r"^qvd-(\d+)$")


def domain_name(vm_id: int) -> str:
    return f"{NAME_PREFIX}{vm_id}"


def vm_id_of(name: str) -> Optional[int]:
    """The VM id of a domain this backend names, else None (other domains are not ours)."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Nic:
    bridge: str
    mac: str
    target: str
    model: Optional[str] = None  # KVM: virtio or e1000
    # a fixed address set by libvirt (LXC without DHCP)
    address: Optional[str] = None
    prefix_len: int = 0
    gateway: Optional[str] = None


@dataclass(frozen=True)
class Serial:
    port: int  # 0: no TCP console (a pty, or the capture file alone)
    capture: Optional[str]  # file the console output is also written to


@dataclass(frozen=True)
class DirectBoot:
    """A kernel booted by the hypervisor itself (no boot loader in the image)."""

    kernel: str
    initrd: str
    cmdline: str

    def add_to(self, os_: ET.Element) -> None:
        """The ``<kernel>``, ``<initrd>`` and ``<cmdline>`` elements of ``<os>``."""
        for tag in ("kernel", "initrd", "cmdline"):
            ET.SubElement(os_, tag).text = getattr(self, tag)


@dataclass(frozen=True)
class KVMDomain:
    name: str
    title: str
    virt_type: str  # "kvm" (hardware) or "qemu" (TCG)
    memory_mib: int
    cpus: int
    disk: str
    readonly: bool
    virtio: bool
    nic: Nic
    home: Optional[str] = None
    home_index: int = 1
    boot: Optional[DirectBoot] = None
    config_dir: Optional[str] = None  # shared read-only with the guest as 9p tag CONFIG_TAG
    serial: Serial = Serial(0, None)
    vnc: bool = False
    balloon: bool = False

    def to_xml(self) -> str:
        domain = _head(self.virt_type, self.name, self.title, self.memory_mib)
        ET.SubElement(domain, "vcpu").text = str(self.cpus)
        os_ = ET.SubElement(domain, "os")
        ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
        if self.boot is not None:
            self.boot.add_to(os_)
        else:
            ET.SubElement(os_, "boot", dev="hd")
        ET.SubElement(ET.SubElement(domain, "features"), "acpi")
        _lifecycle(domain)
        devices = ET.SubElement(domain, "devices")
        self._disk(devices, self.disk, 0, "qcow2", self.readonly)
        if self.home is not None:
            self._disk(devices, self.home, self.home_index, "qcow2", False)
        if self.config_dir is not None:
            fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="squash")
            ET.SubElement(fs, "source", dir=self.config_dir)
            ET.SubElement(fs, "target", dir=CONFIG_TAG)
            ET.SubElement(fs, "readonly")
        _interface(devices, self.nic)
        self._console(devices)
        if self.vnc:
            ET.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes",
                          listen="127.0.0.1")
        ET.SubElement(devices, "memballoon", model="virtio" if self.balloon else "none")
        return _text(domain)

    def _disk(self, devices: ET.Element, path: str, index: int, fmt: str,
              readonly: bool) -> None:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=fmt)
        ET.SubElement(disk, "source", file=path)
        bus, prefix = ("virtio", "vd") if self.virtio else ("ide", "hd")
        ET.SubElement(disk, "target", dev=prefix + string.ascii_lowercase[index], bus=bus)
        if readonly:
            ET.SubElement(disk, "readonly")

    def _console(self, devices: ET.Element) -> None:
        serial = self.serial
        if serial.port:
            element = ET.SubElement(devices, "serial", type="tcp")
            ET.SubElement(element, "source", mode="bind", host="127.0.0.1",
                          service=str(serial.port))
            ET.SubElement(element, "protocol", type="telnet")
        elif serial.capture:
            element = ET.SubElement(devices, "serial", type="file")
            ET.SubElement(element, "source", path=serial.capture)
        else:
            element = ET.SubElement(devices, "serial", type="pty")
        ET.SubElement(element, "target", port="0")
        if serial.port and serial.capture:
            ET.SubElement(element, "log", file=serial.capture, append="on")


@dataclass(frozen=True)
class LXCDomain:
    name: str
    title: str
    memory_mib: int
    rootfs: str
    nic: Nic
    home: Optional[tuple[str, str]] = None  # (host directory, directory in the guest)
    cpuset: Optional[str] = None
    cpus: int = 1
    init: str = "/sbin/init"

    def to_xml(self) -> str:
        domain = _head("lxc", self.name, self.title, self.memory_mib)
        vcpu = ET.SubElement(domain, "vcpu", placement="static")
        vcpu.text = str(self.cpus)
        if self.cpuset:
            vcpu.set("cpuset", self.cpuset)
        ET.SubElement(ET.SubElement(domain, "cputune"), "shares").text = "1024"
        os_ = ET.SubElement(domain, "os")
        ET.SubElement(os_, "type", arch="x86_64").text = "exe"
        ET.SubElement(os_, "init").text = self.init
        _lifecycle(domain)
        devices = ET.SubElement(domain, "devices")
        mounts = [(self.rootfs, "/")] + ([self.home] if self.home else [])
        for source, target in mounts:
            fs = ET.SubElement(devices, "filesystem", type="mount", accessmode="passthrough")
            ET.SubElement(fs, "source", dir=source)
            ET.SubElement(fs, "target", dir=target)
        _interface(devices, self.nic)
        ET.SubElement(devices, "console", type="pty")
        return _text(domain)


def _head(virt_type: str, name: str, title: str, memory_mib: int) -> ET.Element:
    domain = ET.Element("domain", type=virt_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "title").text = title
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    return domain


def _lifecycle(domain: ET.Element) -> None:
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ET.SubElement(domain, event).text = "destroy"


def _interface(devices: ET.Element, nic: Nic) -> None:
    interface = ET.SubElement(devices, "interface", type="bridge")
    ET.SubElement(interface, "source", bridge=nic.bridge)
    ET.SubElement(interface, "mac", address=nic.mac)
    ET.SubElement(interface, "target", dev=nic.target)
    if nic.model:
        ET.SubElement(interface, "model", type=nic.model)
    if nic.address:
        ET.SubElement(interface, "ip", address=nic.address, prefix=str(nic.prefix_len))
        if nic.gateway:
            ET.SubElement(interface, "route", family="ipv4", address="0.0.0.0", prefix="0",
                          gateway=nic.gateway)


def _text(domain: ET.Element) -> str:
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def vnc_port(live_xml: str) -> int:
    """The VNC port libvirt chose for a running domain (0: none)."""
    graphics = ET.fromstring(live_xml).find("./devices/graphics[@type='vnc']")
    port = int(graphics.get("port", "0")) if graphics is not None else 0
    return max(port, 0)


def cpuset_of(xml: str) -> Optional[str]:
    vcpu = ET.fromstring(xml).find("./vcpu")
    return vcpu.get("cpuset") if vcpu is not None else None
