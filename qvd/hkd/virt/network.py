"""The QVD network of a node (reference §5.1, §5.4): its address plan, checked at HKD
start with a clear message, each VM's address and MAC, and the host side (the bridge,
IP forwarding).

The plan comes from ``vm.network.ip.start`` (S) and ``vm.network.netmask``: the
network N = S & mask, node addresses N+1 .. S-1, VM addresses S .. broadcast-1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Generator

from twisted.internet import defer, threads

from qvd.config import Config, ConfigError
from qvd.hkd import commands
from qvd.hkd.hypervisor import LaunchError

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def mac_address(prefix: str, ip: str) -> str:
    """QVD 4's MAC: ``vm.network.mac.prefix`` + the last three octets of the VM's IP."""
    octets = ipaddress.IPv4Address(ip).packed
    return prefix.strip() + "".join(f":{b:02x}" for b in octets[1:])


@dataclass(frozen=True)
class GuestNetwork:
    address: str
    mac: str
    device: str  # the host side of the VM's NIC: qvd<vm id>


@dataclass(frozen=True)
class NetworkPlan:
    bridge: str
    network: ipaddress.IPv4Network
    start: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    mac_prefix: str
    device_prefix: str
    use_dhcp: bool
    dns_server: str
    domain: str

    @classmethod
    def from_config(cls, config: Config) -> "NetworkPlan":
        """The plan, or ``ConfigError`` saying which ``vm.network.*`` key to fix."""
        get = config.get
        gateway_text = get("vm.network.gateway", default="").strip()
        if not gateway_text:
            raise ConfigError("vm.network.gateway is not set: the kvm and lxc hypervisors need"
                              " the QVD network (vm.network.ip.start, vm.network.netmask,"
                              " vm.network.gateway, vm.network.bridge)")
        start_text = get("vm.network.ip.start").strip()
        mask = get("vm.network.netmask").strip()
        try:
            start = ipaddress.IPv4Address(start_text)
            network = ipaddress.IPv4Network(f"{start_text}/{mask}", strict=False)
            gateway = ipaddress.IPv4Address(gateway_text)
        except ValueError as e:
            raise ConfigError(f"bad QVD network (vm.network.ip.start = {start_text},"
                              f" vm.network.netmask = {mask}, vm.network.gateway ="
                              f" {gateway_text}): {e}") from None
        if gateway not in network or not network.network_address < gateway < start:
            raise ConfigError(f"vm.network.gateway {gateway} must be a node address of the QVD"
                              f" network {network}, below vm.network.ip.start {start}")
        bridge = get("vm.network.bridge").strip()
        if not bridge:
            raise ConfigError("vm.network.bridge is empty: name the bridge the VMs plug into")
        dns = get("vm.network.dns_server", default="").strip()
        if dns:
            try:
                ipaddress.IPv4Address(dns)
            except ValueError:
                raise ConfigError(f"vm.network.dns_server {dns!r} is not an IPv4 address") \
                    from None
        return cls(bridge, network, start, gateway, get("vm.network.mac.prefix").strip(),
                   get("internal.vm.network.device.prefix").strip(),
                   config.get_bool("vm.network.use_dhcp"), dns,
                   get("vm.network.domain", default="").strip())

    @property
    def vm_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.start, self.network.broadcast_address - 1

    @property
    def node_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self.network.network_address + 1, self.start - 1

    def guest(self, vm_id: int, ip: str | None) -> GuestNetwork:
        """The VM's own address (``vms.ip``), MAC and host device; ``LaunchError`` if its
        address is missing or outside the VM range."""
        if not ip:
            raise LaunchError("the VM has no IP address (vms.ip)")
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            raise LaunchError(f"the VM's IP address {ip!r} is not an IPv4 address") from None
        first, last = self.vm_range
        if not first <= address <= last:
            raise LaunchError(f"the VM's IP address {ip} is outside the VM range {first}-{last}"
                              " of the QVD network")
        return GuestNetwork(ip, mac_address(self.mac_prefix, ip), self.device(vm_id))

    def device(self, vm_id: int) -> str:
        """The host side of the VM's NIC (release finds it without the VM's address)."""
        return f"{self.device_prefix}{vm_id}"


@defer.inlineCallbacks
def prepare_host(reactor: Any, ip_command: str,
                 plan: NetworkPlan) -> Generator[defer.Deferred[Any], Any, bool]:
    """The bridge up (created with the gateway address if missing: the node is then
    its VMs' router) and IP forwarding on; True if the bridge was created."""
    shown = yield commands.run(reactor, [ip_command, "link", "show", "dev", plan.bridge], 30)
    created = shown.code != 0
    if created:
        yield commands.check(reactor, [ip_command, "link", "add", plan.bridge, "type", "bridge"],
                             30)
        yield commands.check(reactor, [ip_command, "addr", "add",
                                       f"{plan.gateway}/{plan.network.prefixlen}", "dev",
                                       plan.bridge], 30)
    yield commands.check(reactor, [ip_command, "link", "set", plan.bridge, "up"], 30)
    yield threads.deferToThread(_enable_forwarding)
    return created


def _enable_forwarding() -> None:
    with open(IP_FORWARD, "w", encoding="ascii") as f:
        f.write("1\n")
