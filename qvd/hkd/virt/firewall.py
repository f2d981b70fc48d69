"""QVD 4's firewall (reference §5.4): node-wide iptables rules between the VM and node
address ranges, and per-VM ebtables chains that pin each VM to its MAC and IP.

The rules are plain argument lists (pure, so the tests read them); ``apply`` and
``remove`` run them, and removing what is not there is not an error (an earlier HKD may
or may not have left it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator

from twisted.internet import defer
from twisted.logger import Logger

from qvd.config import Config
from qvd.hkd import commands
from qvd.hkd.virt.network import GuestNetwork, NetworkPlan

log = Logger()

Rule = tuple[str, ...]  # iptables -t <table> -A <chain> <match...>: (table, chain, *match)


@dataclass(frozen=True)
class FirewallSettings:
    enabled: bool
    protect_host: bool
    protect_vms: bool
    allow_login_from_vm: bool
    nat_iface: str
    l7r_port: int
    iptables: str
    ebtables: str

    @classmethod
    def from_config(cls, config: Config) -> "FirewallSettings":
        prefix = "internal.vm.network.firewall."
        return cls(config.get_bool(prefix + "enable"), config.get_bool(prefix + "protect_host"),
                   config.get_bool(prefix + "protect_vms"),
                   config.get_bool(prefix + "allow_login_from_vm"),
                   config.get("vm.network.firewall.nat.iface", default="").strip(),
                   config.get_int("l7r.port"), config.get("command.iptables"),
                   config.get("command.ebtables"))


def node_rules(plan: NetworkPlan, fw: FirewallSettings) -> list[Rule]:
    """The iptables rules, in QVD 4's order."""
    vms = "{}-{}".format(*plan.vm_range)
    nodes = "{}-{}".format(*plan.node_range)
    from_vms = ("-m", "iprange", "--src-range", vms)
    to_nodes = ("-m", "iprange", "--src-range", vms, "--dst-range", nodes)
    rules: list[Rule] = []
    if fw.allow_login_from_vm:
        rules += [("filter", "INPUT", "-p", "tcp", "--dport", str(fw.l7r_port), *to_nodes,
                   "-j", "ACCEPT"),
                  ("filter", "INPUT", "-p", "icmp", "--icmp-type", "echo-request", *to_nodes,
                   "-j", "ACCEPT")]
    if fw.protect_host:
        rules += [("filter", "FORWARD", "-p", "tcp", "--syn", *to_nodes, "-j", "DROP"),
                  ("filter", "INPUT", "-p", "tcp", "--syn", *from_vms, "-j", "DROP")]
    rules += [("filter", "FORWARD", "-p", "tcp", *to_nodes, "-j", "ACCEPT"),
              ("filter", "INPUT", "-p", "tcp", *from_vms, "-j", "ACCEPT"),
              ("filter", "INPUT", "-p", "udp", "-m", "multiport", "--dports", "67,53", *from_vms,
               "-j", "ACCEPT"),
              ("filter", "INPUT", "-p", "tcp", "--dport", "53", *from_vms, "-j", "ACCEPT")]
    if fw.protect_host:
        rules += [("filter", "FORWARD", *to_nodes, "-j", "DROP"),
                  ("filter", "INPUT", *from_vms, "-j", "DROP")]
    if fw.protect_vms:
        rules.append(("filter", "FORWARD", "-m", "iprange", "--src-range", vms, "--dst-range",
                      vms, "-j", "DROP"))
    if fw.nat_iface:
        rules.append(("nat", "POSTROUTING", *from_vms, "-o", fw.nat_iface, "-j", "MASQUERADE"))
    return rules


def vm_chains(vm_id: int) -> tuple[str, str]:
    return f"QVD_{vm_id}_INPUT", f"QVD_{vm_id}_FORWARD"


def vm_rules(vm_id: int, guest: GuestNetwork, use_dhcp: bool) -> list[tuple[str, ...]]:
    """ebtables commands (after ``ebtables``) that create the VM's chains and jumps."""
    into, through = vm_chains(vm_id)
    not_mac = ("-s", "!", guest.mac, "-j", "DROP")
    not_ip = ("-p", "IPv4", "--ip-src", "!", guest.address, "-j", "DROP")
    dhcp = ("-p", "IPv4", "--ip-proto", "udp", "--ip-src", "0.0.0.0", "--ip-dport", "67")
    return [
        ("-N", into, "-P", "ACCEPT"),
        ("-N", through, "-P", "ACCEPT"),
        ("-A", into, *not_mac),
        ("-A", through, *not_mac),
        ("-A", through, *not_ip),
        ("-A", into, *dhcp, "-j", "ACCEPT" if use_dhcp else "DROP"),
        ("-A", through, "-p", "IPv4", "--ip-proto", "udp", "--ip-dport", "67", "-j", "DROP"),
        ("-A", into, *not_ip),
        ("-A", "INPUT", "-i", guest.device, "-j", into),
        ("-A", "FORWARD", "-i", guest.device, "-j", through),
    ]


class Firewall:
    def __init__(self, reactor: Any, plan: NetworkPlan, settings: FirewallSettings):
        self.reactor = reactor
        self.plan = plan
        self.settings = settings

    @defer.inlineCallbacks
    def apply_node(self) -> Generator[defer.Deferred[Any], Any, None]:
        """The node rules, each once (old copies are deleted first, as QVD 4 did)."""
        if not self.settings.enabled:
            return
        yield self.remove_node()
        for table, chain, *match in node_rules(self.plan, self.settings):
            yield commands.check(self.reactor,
                                 [self.settings.iptables, "-t", table, "-A", chain, *match], 30)

    @defer.inlineCallbacks
    def remove_node(self) -> Generator[defer.Deferred[Any], Any, None]:
        if not self.settings.enabled:
            return
        for table, chain, *match in node_rules(self.plan, self.settings):
            while True:
                result = yield commands.run(
                    self.reactor, [self.settings.iptables, "-t", table, "-D", chain, *match], 30)
                if result.code != 0:
                    break

    @defer.inlineCallbacks
    def apply_vm(self, vm_id: int, guest: GuestNetwork) -> Generator[defer.Deferred[Any], Any,
                                                                    None]:
        if not self.settings.enabled:
            return
        yield self.remove_vm(vm_id, guest.device)
        for args in vm_rules(vm_id, guest, self.plan.use_dhcp):
            yield commands.check(self.reactor, [self.settings.ebtables, *args], 30)

    @defer.inlineCallbacks
    def remove_vm(self, vm_id: int, device: str) -> Generator[defer.Deferred[Any], Any, None]:
        """The VM's jumps and chains, if there (QVD 4's naming: an old HKD's are found too)."""
        if not self.settings.enabled:
            return
        ebtables = self.settings.ebtables
        for base, chain in zip(("INPUT", "FORWARD"), vm_chains(vm_id)):
            while (yield commands.run(self.reactor, [ebtables, "-D", base, "-i", device, "-j",
                                                     chain], 30)).code == 0:
                pass
            yield commands.run(self.reactor, [ebtables, "-F", chain], 30)
            yield commands.run(self.reactor, [ebtables, "-X", chain], 30)
