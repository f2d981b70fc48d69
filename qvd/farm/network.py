"""The farm's network: a bridge, a namespace per node, a network behind each node.

Layout for a farm whose plan picked ``10.X.0.0/16`` (X free on this machine):

* the bridge ``qf<id>`` in the machine's own namespace, at ``10.X.0.1/24``:
  the QVD-DB and haproxy address, and the clients' way in;
* node *i* in the namespace ``qf<id>n<i>``, plugged into the bridge by a
  veth pair (``qf<id>r<i>`` outside, ``eth0`` inside) at ``10.X.0.(10+i)``;
* behind node *i*, its VM network ``10.X.i.0/24`` on a bridge ``qvdnet``
  inside its namespace (gateway ``10.X.i.1``); each VM is a namespace of
  its own (``qf<id><i>v<vm id>``, made by the node's HKD) at an address of
  ``10.X.i.10-10.X.i.250``.  Nodes forward for their VMs and route the other
  nodes' VM networks through those nodes, so any L7R reaches any VM, as on
  a routed QVD network; the machine's namespace gets the same routes, so
  tools can reach the VMAs too.

Every name starts with ``qf<id>`` (``id`` four random hex digits), so farms
running at once, and the machine's own interfaces, never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import random
import subprocess
from dataclasses import dataclass
from typing import Iterator

from qvd.farm import FarmError

IP = "/sbin/ip"
NSENTER = "/usr/bin/nsenter"
RUN_DIR = "/run/qvd-farm"  # the plan lock and the state of every running farm
NETNS_DIR = "/run/netns"
MAX_NODES = 50
VM_BRIDGE = "qvdnet"
UPLINK = "eth0"


@dataclass(frozen=True)
class Plan:
    """Names and addresses of one farm (what teardown needs, kept as JSON)."""

    farm_id: str
    octet: int
    nodes: int

    @property
    def prefix(self) -> str:
        return f"qf{self.farm_id}"

    @property
    def bridge(self) -> str:
        return self.prefix

    @property
    def gateway(self) -> str:
        """The machine's address on the farm bridge: QVD-DB, haproxy, clients."""
        return f"10.{self.octet}.0.1"

    def vm_prefix(self, i: int) -> str:
        """Node *i*'s ``internal.vm.network.device.prefix``: its VM namespaces are this + the
        VM id.  One prefix per node: two nodes may run the same VM at once (one of them
        lost, not yet fenced), and on one machine their namespaces must not share a name."""
        return f"{self.prefix}{i}v"

    def namespace(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def root_veth(self, i: int) -> str:
        return f"{self.prefix}r{i}"

    def address(self, i: int) -> str:
        return f"10.{self.octet}.0.{10 + i}"

    def vm_network(self, i: int) -> str:
        return f"10.{self.octet}.{i}.0/24"

    def vm_gateway(self, i: int) -> str:
        return f"10.{self.octet}.{i}.1"

    def vm_range(self, i: int) -> str:
        return f"10.{self.octet}.{i}.10-10.{self.octet}.{i}.250"

    def owns(self, name: str) -> bool:
        """Whether a namespace or link name is one of this farm's."""
        return name.startswith(self.prefix)


def ip(*args: str) -> str:
    """``ip <args>``; its output, or ``FarmError`` with its complaint."""
    result = subprocess.run([IP, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise FarmError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def in_namespace(namespace: str) -> list[str]:
    """The argv prefix that runs a command in a node's network namespace only.

    ``nsenter --net``, not ``ip netns exec``: the command keeps the machine's
    mount namespace, where the namespaces its HKD makes for VMs are visible.
    """
    return [NSENTER, f"--net={NETNS_DIR}/{namespace}", "--"]


@contextlib.contextmanager
def planning_lock() -> Iterator[None]:
    """One farm at a time picks its addresses and puts them on its bridge."""
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(os.path.join(RUN_DIR, "plan.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address or a route in."""
    found = []
    text = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    for word in text.split():
        try:
            found.append(ipaddress.IPv4Network(word, strict=False))
        except ValueError:
            continue
    return [n for n in found if n.prefixlen > 0]


def existing_names() -> set[str]:
    links = {line.split(":")[1].strip().split("@")[0]
             for line in ip("-o", "link", "show").splitlines() if ":" in line}
    return links | set(namespaces())


def choose(nodes: int) -> Plan:
    """A plan on a /16 of 10/8 nothing here uses, with a fresh id (hold ``planning_lock``)."""
    if not 1 <= nodes <= MAX_NODES:
        raise FarmError(f"a farm has 1 to {MAX_NODES} nodes, not {nodes}")
    used = used_networks()
    names = existing_names()
    octets = list(range(100, 250))
    random.shuffle(octets)
    for octet in octets:
        wanted = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if any(wanted.overlaps(n) for n in used):
            continue
        for _ in range(100):
            plan = Plan(f"{random.randrange(16 ** 4):04x}", octet, nodes)
            if not any(plan.owns(name) for name in names):
                return plan
    raise FarmError("no free 10.X.0.0/16 network left on this machine for a farm")


def build(plan: Plan) -> None:
    """The bridge, the node namespaces, their VM networks and the routes."""
    ip("link", "add", plan.bridge, "type", "bridge")
    ip("addr", "add", f"{plan.gateway}/24", "dev", plan.bridge)
    ip("link", "set", plan.bridge, "up")
    for i in range(1, plan.nodes + 1):
        ns = plan.namespace(i)
        ip("netns", "add", ns)
        ip("link", "add", plan.root_veth(i), "type", "veth", "peer", "name", UPLINK,
           "netns", ns)
        ip("link", "set", plan.root_veth(i), "master", plan.bridge, "up")
        for args in (("link", "set", "lo", "up"),
                     ("addr", "add", f"{plan.address(i)}/24", "dev", UPLINK),
                     ("link", "set", UPLINK, "up"),
                     ("link", "add", VM_BRIDGE, "type", "bridge"),
                     ("addr", "add", f"{plan.vm_gateway(i)}/24", "dev", VM_BRIDGE),
                     ("link", "set", VM_BRIDGE, "up")):
            ip("-n", ns, *args)
        forwarding = subprocess.run(
            in_namespace(ns) + ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            capture_output=True, text=True)
        if forwarding.returncode != 0:
            raise FarmError(f"cannot turn forwarding on in {ns}: {forwarding.stderr.strip()}")
    for i in range(1, plan.nodes + 1):
        ip("route", "add", plan.vm_network(i), "via", plan.address(i))
        for j in range(1, plan.nodes + 1):
            if j != i:
                ip("-n", plan.namespace(i), "route", "add", plan.vm_network(j),
                   "via", plan.address(j))


def namespaces() -> list[str]:
    """The names of every named network namespace here."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def pids_in(namespace: str) -> list[int]:
    """The processes whose network namespace is ``namespace`` (gone: none)."""
    result = subprocess.run([IP, "netns", "pids", namespace], capture_output=True, text=True)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def destroy(plan: Plan) -> None:
    """Every namespace and link of the plan (their processes must be gone); quiet about
    what is already gone."""
    for name in namespaces():
        if plan.owns(name):
            subprocess.run([IP, "netns", "del", name], capture_output=True)
    subprocess.run([IP, "link", "del", plan.bridge], capture_output=True)
