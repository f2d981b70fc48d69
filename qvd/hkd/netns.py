"""Per-VM network namespaces for the ``process`` hypervisor (optional).

When the HKD runs as root and ``vm.network.gateway`` is set, each process
VM gets its own network namespace (named like QVD 4's veth: ``qvd<vm id>``)
with ``vms.ip`` on an ``eth0`` whose peer is plugged into
``vm.network.bridge``; the VMA then listens on QVD's usual port 3030 at the
VM's own address, and the MAC follows QVD 4's rule.  The bridge, its
address and any routing or NAT beyond it are the administrator's, as in
QVD 4.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer, utils

from qvd.config import Config
from qvd.hkd.hypervisor import LaunchError
from qvd.hkd.virt.network import mac_address


@dataclass(frozen=True)
class VMNetwork:
    name: str
    address: str
    prefix_len: int
    gateway: str
    bridge: str
    mac: str


def enabled(config: Config) -> bool:
    return os.geteuid() == 0 and bool(config.get("vm.network.gateway", default="").strip())


def namespace(config: Config, vm_id: int) -> str:
    return config.get("internal.vm.network.device.prefix").strip() + str(vm_id)


def plan(config: Config, vm_id: int, ip: Optional[str]) -> Optional[VMNetwork]:
    """The VM's network, or None when VMs share the node's loopback."""
    if not enabled(config):
        return None
    if not ip:
        raise LaunchError("the VM has no IP address (vms.ip) for its network namespace")
    try:
        mac = mac_address(config.get("vm.network.mac.prefix"), ip)
        mask = config.get("vm.network.netmask").strip()
        prefix_len = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError as e:
        raise LaunchError(f"bad VM network settings: {e}") from None
    return VMNetwork(namespace(config, vm_id), ip, prefix_len,
                     config.get("vm.network.gateway").strip(),
                     config.get("vm.network.bridge").strip(), mac)


class Namespaces:
    """``ip`` (``command.ip``) run asynchronously."""

    def __init__(self, config: Config, reactor: Any):
        self.config = config
        self.reactor = reactor

    @property
    def ip(self) -> str:
        return self.config.get("command.ip")

    def exec_prefix(self, net: VMNetwork) -> list[str]:
        return [self.ip, "netns", "exec", net.name]

    @defer.inlineCallbacks
    def create(self, net: VMNetwork) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.remove(net.name)  # left over by a crash
        inside = ("-n", net.name)
        for args in (
            ("netns", "add", net.name),
            ("link", "add", net.name, "type", "veth", "peer", "name", "eth0", "netns", net.name),
            ("link", "set", net.name, "master", net.bridge, "up"),
            inside + ("link", "set", "eth0", "address", net.mac),
            inside + ("addr", "add", f"{net.address}/{net.prefix_len}", "dev", "eth0"),
            inside + ("link", "set", "eth0", "up"),
            inside + ("link", "set", "lo", "up"),
            inside + ("route", "add", "default", "via", net.gateway),
        ):
            out, err, code = yield self._run(args)
            if code != 0:
                yield self.remove(net.name)
                why = err.decode(errors="replace").strip()
                raise LaunchError(f"ip {' '.join(args)} failed: {why}")

    def remove(self, name: str) -> defer.Deferred[Any]:
        """Delete the namespace (and with it the veth pair); a missing one is fine."""
        return self._run(("netns", "del", name))

    def _run(self, args: tuple[str, ...]) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return utils.getProcessOutputAndValue(self.ip, args, env=dict(os.environ),
                                              reactor=self.reactor)
