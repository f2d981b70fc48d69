"""The ``kvm`` and ``lxc`` hypervisors: each VM is a libvirt domain ``qvd-<vm id>``.

Launch prepares the VM's storage (``kvmdisk``/``lxcfs``, in a thread), registers its
MAC and IP with dnsmasq, pins it with the firewall, then defines and starts the
domain.  Domains are persistent definitions, so an HKD that restarts (even after
SIGKILL) finds its running VMs by name and adopts them; domains named like ours whose
VM QVD-DB gave away are destroyed.  One poll of libvirt's active domains every
``internal.hkd.libvirt.check.delay`` seconds tells which VMs ended.  ``TERM`` asks the
guest to shut down (ACPI, or the container's init), ``KILL`` destroys the domain.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Generator, Optional

import psutil
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from qvd.config import Config
from qvd import files
from qvd.hkd import displays, vmaconf
from qvd.db.runtimes import VMSpec
from qvd.hkd.hypervisor import IHypervisor, IVMInstance, LaunchError
from qvd.hkd.layout import VMFiles
from qvd.stream.once import Once
from qvd.hkd.virt import domains, kvmdisk, lxcfs, network
from qvd.hkd.virt.connection import LibvirtConnection, require_libvirt
from qvd.hkd.virt.dhcp import DHCPServer, DHCPSettings
from qvd.hkd.virt.firewall import Firewall, FirewallSettings
from qvd.hkd.virt.network import GuestNetwork, NetworkPlan

log = Logger()

KVM_IOCTL_CREATE_VM = 0xAE01
SERIAL_BASE = 2000  # QVD 4: serial consoles on host ports above 2000
INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances"
INOTIFY_WANTED = 8192


@dataclass(frozen=True)
class DomainRecord:
    """What ``vm.json`` keeps of a VM's domain, for the HKD that adopts it."""

    vm_id: int
    di_id: int
    address: str
    mac: str
    device: str
    ports: dict[str, int]


@implementer(IVMInstance)
class DomainVM:
    def __init__(self, hypervisor: "LibvirtHypervisor", record: DomainRecord, pid: int):
        self._hypervisor = hypervisor
        self.record = record
        self.pid = pid
        self.address = record.address
        self.ports = record.ports
        self._exit = Once()

    @property
    def exited(self) -> bool:
        return self._exit.happened

    def when_exited(self) -> defer.Deferred[None]:
        return self._exit.wait()

    def signal(self, name: str) -> None:
        self._hypervisor.signal(self.record.vm_id, name).addErrback(
            lambda f: log.warn("VM {vm_id}: {signal} failed: {error}", vm_id=self.record.vm_id,
                               signal=name, error=f.getErrorMessage()))

    def _exited(self) -> None:
        self._exit.fire()


@implementer(IHypervisor)
class LibvirtHypervisor:
    """What KVM and LXC share; ``KVMHypervisor`` and ``LXCHypervisor`` fill in the guest."""

    name = ""

    def __init__(self, config: Config, reactor: Any):
        self.config = config
        self.reactor = reactor
        self.plan = NetworkPlan.from_config(config)
        self.connection = LibvirtConnection(
            reactor, config.get(f"vm.libvirt.uri.{self.name}").strip(),
            config.get_int("internal.hkd.libvirt.threads"))
        self.dhcp = (DHCPServer(reactor, self.plan, DHCPSettings.from_config(config))
                     if self.plan.use_dhcp else None)
        self.firewall = Firewall(reactor, self.plan, FirewallSettings.from_config(config))
        self.vms: dict[int, DomainVM] = {}
        self._watch = task.LoopingCall(self._check)
        self._watch.clock = reactor

    @staticmethod
    def check_config(config: Config) -> None:
        """What the HKD checks before it starts (a clean error and exit status)."""
        require_libvirt()
        NetworkPlan.from_config(config)

    def files(self, vm_id: int) -> VMFiles:
        return VMFiles.under(self.config.get(f"path.run.{self.name}"),
                             domains.domain_name(vm_id))

    # -- the host ---------------------------------------------------------------------------
    @defer.inlineCallbacks
    def start(self) -> Generator[defer.Deferred[Any], Any, None]:
        """libvirt reached; the bridge, IP forwarding, the node's firewall rules, dnsmasq."""
        try:
            yield self.connection.call(lambda conn: conn.getLibVersion())
        except Exception as e:
            raise LaunchError(f"cannot reach libvirt at {self.connection.uri}: {e}") from None
        created = yield network.prepare_host(self.reactor, self.config.get("command.ip"),
                                             self.plan)
        if created:
            log.info("created bridge {bridge} ({gateway})", bridge=self.plan.bridge,
                     gateway=self.plan.gateway)
        yield self.firewall.apply_node()
        if self.dhcp is not None:
            yield self.dhcp.start()
        yield self.prepare_hypervisor()
        self._watch.start(self.config.get_float("internal.hkd.libvirt.check.delay"), now=False
                          ).addErrback(lambda f: log.failure("watching domains failed", f))
        log.info("{name} hypervisor on {uri}", name=self.name, uri=self.connection.uri)

    def prepare_hypervisor(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    @defer.inlineCallbacks
    def stop(self) -> Generator[defer.Deferred[Any], Any, None]:
        if self._watch.running:
            self._watch.stop()
        if self.dhcp is not None:
            yield self.dhcp.stop()
        try:
            yield self.firewall.remove_node()
        finally:
            yield threads.deferToThread(self.connection.close)

    # -- launch -------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def launch(self, spec: VMSpec) -> Generator[defer.Deferred[Any], Any, DomainVM]:
        guest = self.plan.guest(spec.vm_id, spec.ip)
        files_ = self.files(spec.vm_id)
        conf = vmaconf.render(spec.vm_id, vmaconf.passed(self.config.effective()),
                              vmaconf.for_guest(port=self.vma_port, display=self.display,
                                                poweroff=self._poweroff()))
        try:
            xml, ports = yield self.prepare_guest(spec, guest, files_, conf)
            record = DomainRecord(spec.vm_id, spec.di_id, guest.address, guest.mac,
                                  guest.device, ports)
            yield threads.deferToThread(_save, files_, record, xml)
            if self.dhcp is not None:
                yield self.dhcp.register(guest.mac, guest.address)
            yield self.firewall.apply_vm(spec.vm_id, guest)
            pid, vnc = yield self.connection.call(self._define_and_start, spec.vm_id, xml)
        except Exception as e:
            yield self.release(spec.vm_id)
            if isinstance(e, LaunchError):
                raise
            raise LaunchError(f"cannot start domain {domains.domain_name(spec.vm_id)}: {e}") \
                from e
        if vnc:
            record = replace(record, ports=dict(ports, vnc=vnc))
            yield threads.deferToThread(_save, files_, record, xml)
        vm = self.vms[spec.vm_id] = DomainVM(self, record, pid)
        return vm

    @property
    def vma_port(self) -> int:
        return self.config.get_int("internal.vm.port.vma")

    @property
    def display(self) -> int:
        return self.config.get_int("internal.nxagent.display")

    def guest_ports(self, serial: int = 0) -> dict[str, int]:
        """vm_runtimes' ports: QVD's fixed ports inside the guest, host ports for consoles."""
        return {"vma": self.vma_port, "x": displays.nx_port(self.display),
                "ssh": self.config.get_int("internal.vm.port.ssh"), "vnc": 0, "serial": serial,
                "mon": 0}

    def _poweroff(self) -> str:
        return self.config.get("vma.poweroff.command").strip() or "poweroff"

    def prepare_guest(self, spec: VMSpec, guest: GuestNetwork, files_: VMFiles,
                      conf: str) -> defer.Deferred[tuple[str, dict[str, int]]]:
        """Storage and domain XML of the guest: (xml, ports)."""
        raise NotImplementedError

    def _define_and_start(self, conn: Any, vm_id: int, xml: str) -> tuple[int, int]:
        dom = conn.defineXML(xml)
        dom.create()
        return self.domain_pid(dom), domains.vnc_port(dom.XMLDesc(0))

    def domain_pid(self, dom: Any) -> int:
        raise NotImplementedError

    # -- adopt, release, strays ---------------------------------------------------------------
    @defer.inlineCallbacks
    def adopt(self, vm_id: int) -> Generator[defer.Deferred[Any], Any, Optional[DomainVM]]:
        record = yield threads.deferToThread(_load, self.files(vm_id))
        if record is None:
            return None
        pid = yield self.connection.call(self._running_pid, vm_id)
        if pid is None:
            return None
        if self.dhcp is not None:
            yield self.dhcp.register(record.mac, record.address)
        yield self.adopted(record)
        vm = self.vms[vm_id] = DomainVM(self, record, pid)
        return vm

    def adopted(self, record: DomainRecord) -> defer.Deferred[None]:
        return defer.succeed(None)

    def _running_pid(self, conn: Any, vm_id: int) -> Optional[int]:
        dom = _lookup(conn, vm_id)
        return self.domain_pid(dom) if dom is not None and dom.isActive() else None

    @defer.inlineCallbacks
    def release(self, vm_id: int) -> Generator[defer.Deferred[Any], Any, None]:
        """The domain destroyed and undefined, its network entries and storage freed."""
        vm = self.vms.pop(vm_id, None)
        files_ = self.files(vm_id)
        record = vm.record if vm is not None else (yield threads.deferToThread(_load, files_))
        yield self.connection.call(_undefine, vm_id)
        yield self.firewall.remove_vm(vm_id, self.plan.device(vm_id))
        if record is not None and self.dhcp is not None:
            yield self.dhcp.unregister(record.mac)
        yield self.release_guest(vm_id, record)
        yield threads.deferToThread(files.unlink, files_.state)
        if vm is not None:
            vm._exited()

    def release_guest(self, vm_id: int, record: Optional[DomainRecord]) -> defer.Deferred[None]:
        return defer.succeed(None)

    @defer.inlineCallbacks
    def reap_strays(self, keep: set[int]) -> Generator[defer.Deferred[Any], Any, list[int]]:
        ours = yield self.connection.call(_our_domains)
        reaped = []
        for vm_id, active in sorted(ours.items()):
            if vm_id not in keep:
                yield self.release(vm_id)
                if active:
                    reaped.append(vm_id)
        return reaped

    # -- watching and signalling ------------------------------------------------------------
    def signal(self, vm_id: int, name: str) -> defer.Deferred[None]:
        return self.connection.call(_signal, vm_id, name)

    @defer.inlineCallbacks
    def _check(self) -> Generator[defer.Deferred[Any], Any, None]:
        if not self.vms:
            return
        try:
            active = yield self.connection.call(_active_names)
        except Exception as e:  # libvirtd away: no verdict, try again
            log.warn("cannot list {name} domains: {error}", name=self.name, error=e)
            return
        for vm_id, vm in list(self.vms.items()):
            if domains.domain_name(vm_id) not in active and self.vms.get(vm_id) is vm:
                log.info("domain {domain} ended", domain=domains.domain_name(vm_id))
                vm._exited()


@implementer(IHypervisor)
class KVMHypervisor(LibvirtHypervisor):
    """QEMU/KVM guests; TCG when the node has no usable KVM (``vm.kvm.accel``)."""

    name = "kvm"
    virt_type = "kvm"

    @defer.inlineCallbacks
    def prepare_hypervisor(self) -> Generator[defer.Deferred[Any], Any, None]:
        accel = self.config.get("vm.kvm.accel").strip()
        if accel not in ("auto", "kvm", "tcg"):
            raise LaunchError(f"vm.kvm.accel = {accel!r}: use auto, kvm or tcg")
        if accel == "auto":
            accel = "kvm" if (yield threads.deferToThread(kvm_usable)) else "tcg"
        self.virt_type = "kvm" if accel == "kvm" else "qemu"
        log.info("KVM guests run with {accel}", accel="KVM" if accel == "kvm" else
                 "QEMU's TCG (no usable hardware virtualisation)")

    @defer.inlineCallbacks
    def prepare_guest(self, spec: VMSpec, guest: GuestNetwork, files_: VMFiles,
                      conf: str) -> Generator[defer.Deferred[Any], Any, tuple[str, dict]]:
        settings = kvmdisk.KVMStorageSettings.from_config(self.config)
        get = self.config.get
        virtio = self.config.get_bool("vm.kvm.virtio")
        serial_redirect = self.config.get_bool("vm.serial.redirect")
        capture = None
        if self.config.get_bool("vm.serial.capture"):
            capture = os.path.join(get("path.serial.captures"),
                                   f"capture-{domains.domain_name(spec.vm_id)}-"
                                   f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}.txt")
        taken = {vm.ports["serial"] for vm in self.vms.values()}  # self.vms: reactor thread
        disks, serial = yield threads.deferToThread(
            self._prepare_files, settings, spec, files_, conf, serial_redirect, capture, taken)
        boot = None
        if disks.kernel is not None:
            root = "/dev/vda" if virtio else "/dev/sda"
            boot = domains.DirectBoot(*disks.kernel,
                                      f"root={root} {get('vm.kvm.kernel.cmdline').strip()}")
        domain = domains.KVMDomain(
            name=domains.domain_name(spec.vm_id), title=f"qvd/{spec.vm_id}/{spec.name}",
            virt_type=self.virt_type, memory_mib=spec.memory,
            cpus=self.config.get_int("vm.kvm.cpus"), disk=disks.disk, readonly=disks.readonly,
            virtio=virtio, nic=domains.Nic(self.plan.bridge, guest.mac, guest.device,
                                           "virtio" if virtio else "e1000"),
            home=disks.home, home_index=self.config.get_int("vm.kvm.home.drive.index"),
            boot=boot, config_dir=os.path.join(files_.directory, "config"),
            serial=domains.Serial(serial, capture), vnc=self.config.get_bool("vm.vnc.redirect"),
            balloon=self.config.get_bool("vm.kvm.ballooning"))
        return domain.to_xml(), self.guest_ports(serial)

    def _prepare_files(self, settings: kvmdisk.KVMStorageSettings, spec: VMSpec,
                       files_: VMFiles, conf: str, serial_redirect: bool,
                       capture: Optional[str], taken: set[int]
                       ) -> tuple[kvmdisk.KVMDisks, int]:
        config_dir = os.path.join(files_.directory, "config")
        os.makedirs(config_dir, exist_ok=True)
        files.replace(os.path.join(config_dir, "vma.conf"), conf, 0o644)
        if capture:
            os.makedirs(os.path.dirname(capture), exist_ok=True)
        disks = kvmdisk.prepare(settings, spec.vm_id, spec.di_id, spec.di_path,
                                spec.use_overlay, spec.user_storage_size)
        serial = _serial_port(taken) if serial_redirect else 0
        return disks, serial

    def domain_pid(self, dom: Any) -> int:
        """The QEMU process of the domain (0 where there is none, e.g. libvirt's test
        driver)."""
        mark = f"guest={dom.name()},"
        for process in psutil.process_iter(["cmdline"]):
            if any(arg.startswith(mark) for arg in process.info["cmdline"] or []):
                return process.pid
        return 0

    @defer.inlineCallbacks
    def release_guest(self, vm_id: int, record: Optional[DomainRecord]
                      ) -> Generator[defer.Deferred[Any], Any, None]:
        if record is not None:
            settings = kvmdisk.KVMStorageSettings.from_config(self.config)
            yield threads.deferToThread(kvmdisk.discard_overlay, settings, vm_id, record.di_id)


@implementer(IHypervisor)
class LXCHypervisor(LibvirtHypervisor):
    """Containers on the manual's basefs/overlayfs/homefs/rootfs, with cgroup limits."""

    name = "lxc"

    def __init__(self, config: Config, reactor: Any):
        super().__init__(config, reactor)
        self.cpus = CPUSets(os.cpu_count() or 1)

    @defer.inlineCallbacks
    def prepare_hypervisor(self) -> Generator[defer.Deferred[Any], Any, None]:
        instances = yield threads.deferToThread(_read, INOTIFY_INSTANCES)
        if instances and int(instances) < INOTIFY_WANTED:
            log.warn("fs.inotify.max_user_instances is {n}: each container's systemd takes"
                     " about 7, so about {vms} containers boot; raise it (sysctl"
                     " fs.inotify.max_user_instances={wanted})", n=int(instances),
                     vms=int(instances) // 7, wanted=INOTIFY_WANTED)

    @defer.inlineCallbacks
    def prepare_guest(self, spec: VMSpec, guest: GuestNetwork, files_: VMFiles,
                      conf: str) -> Generator[defer.Deferred[Any], Any, tuple[str, dict]]:
        settings = lxcfs.LXCStorageSettings.from_config(self.config)
        root = yield threads.deferToThread(
            lxcfs.prepare, settings, spec.vm_id, spec.di_id, spec.di_path, spec.login,
            spec.user_storage_size, conf)
        cpuset = self.cpus.take(spec.vm_id, self.config.get_int("vm.lxc.cpuset.size"))
        static = not self.plan.use_dhcp
        nic = domains.Nic(self.plan.bridge, guest.mac, guest.device,
                          address=guest.address if static else None,
                          prefix_len=self.plan.network.prefixlen,
                          gateway=str(self.plan.gateway) if static else None)
        domain = domains.LXCDomain(
            name=domains.domain_name(spec.vm_id), title=f"qvd/{spec.vm_id}/{spec.name}",
            memory_mib=spec.memory, rootfs=root.rootfs, nic=nic, home=root.home,
            cpuset=CPUSets.text(cpuset), cpus=len(cpuset))
        return domain.to_xml(), self.guest_ports()

    def domain_pid(self, dom: Any) -> int:
        """The container's controller process (libvirt_lxc), whose child is its init."""
        return int(dom.ID()) if dom.isActive() else 0

    @defer.inlineCallbacks
    def adopted(self, record: DomainRecord) -> Generator[defer.Deferred[Any], Any, None]:
        xml = yield threads.deferToThread(_read, self.files(record.vm_id).domain)
        cpuset = domains.cpuset_of(xml) if xml else None
        if cpuset:
            self.cpus.restore(record.vm_id, cpuset)

    @defer.inlineCallbacks
    def release_guest(self, vm_id: int, record: Optional[DomainRecord]
                      ) -> Generator[defer.Deferred[Any], Any, None]:
        self.cpus.release(vm_id)
        settings = lxcfs.LXCStorageSettings.from_config(self.config)
        yield threads.deferToThread(lxcfs.unmount_all, settings,
                                    settings.storage.lxc_rootfs(vm_id))


class CPUSets:
    """QVD 4's CPU pinning: each container gets the ``vm.lxc.cpuset.size`` least used
    CPUs of the node."""

    def __init__(self, count: int):
        self.usage = [0] * count
        self.taken: dict[int, list[int]] = {}

    def take(self, vm_id: int, size: int) -> list[int]:
        self.release(vm_id)
        size = max(1, min(size, len(self.usage)))
        chosen = sorted(sorted(range(len(self.usage)), key=lambda c: self.usage[c])[:size])
        self._hold(vm_id, chosen)
        return chosen

    def restore(self, vm_id: int, text: str) -> None:
        self.release(vm_id)
        cpus = []
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus += range(int(first), int(last or first) + 1)
        self._hold(vm_id, [c for c in cpus if c < len(self.usage)])

    def release(self, vm_id: int) -> None:
        for cpu in self.taken.pop(vm_id, []):
            self.usage[cpu] -= 1

    def _hold(self, vm_id: int, cpus: list[int]) -> None:
        self.taken[vm_id] = cpus
        for cpu in cpus:
            self.usage[cpu] += 1

    @staticmethod
    def text(cpus: list[int]) -> str:
        return ",".join(str(c) for c in cpus)


def _serial_port(taken: set[int]) -> int:
    """A free host port above 2000 for the serial console, not one of ``taken`` (our
    VMs')."""
    for port in range(SERIAL_BASE + 1, SERIAL_BASE + 10000):
        if port not in taken and displays.bindable("127.0.0.1", port):
            return port
    raise LaunchError("no free port for the serial console")


def kvm_usable() -> bool:
    """Hardware virtualisation a guest can use: /dev/kvm makes a VM and the CPU shows
    vmx or svm (a /dev/kvm without them, as on some nested hosts, hangs guests)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = {flag for line in f if line.startswith("flags")
                     for flag in line.split(":", 1)[1].split()}
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(fcntl.ioctl(fd, KVM_IOCTL_CREATE_VM, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & {"vmx", "svm"})


# -- libvirt calls (in the connection's threads) ------------------------------------------------
def _lookup(conn: Any, vm_id: int) -> Any:
    import libvirt
    try:
        return conn.lookupByName(domains.domain_name(vm_id))
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _undefine(conn: Any, vm_id: int) -> None:
    import libvirt
    dom = _lookup(conn, vm_id)
    if dom is None:
        return
    try:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


def _signal(conn: Any, vm_id: int, name: str) -> None:
    import libvirt
    dom = _lookup(conn, vm_id)
    if dom is None:
        return
    try:
        if name == "KILL":
            dom.destroy()
        else:
            dom.shutdown()
    except libvirt.libvirtError as e:
        if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
            raise


def _active_names(conn: Any) -> set[str]:
    import libvirt
    return {dom.name() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


def _our_domains(conn: Any) -> dict[int, bool]:
    """Every domain named like ours: vm id -> running."""
    ours = {}
    for dom in conn.listAllDomains(0):
        vm_id = domains.vm_id_of(dom.name())
        if vm_id is not None:
            ours[vm_id] = bool(dom.isActive())
    return ours


# -- the VM's files (in threads) ----------------------------------------------------------------
def _save(files_: VMFiles, record: DomainRecord, xml: str) -> None:
    os.makedirs(files_.directory, exist_ok=True)
    files.replace(files_.domain, xml)
    files.replace(files_.state, json.dumps(asdict(record)))


def _load(files_: VMFiles) -> Optional[DomainRecord]:
    try:
        with open(files_.state, encoding="utf-8") as f:
            return DomainRecord(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None
