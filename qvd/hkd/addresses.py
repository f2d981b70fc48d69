"""A node's own address range for its process VMs (``vm.process.ip.range``).

QVD 4 puts every VM on one network shared by all nodes, at its ``vms.ip``.
A node whose VMs sit behind it on a network of their own (routed, not
bridged to the other nodes: the farm tool's layout, or a node per rack)
must give each VM an address of its own range instead, whatever node ran
the VM before.  The choice starts at the VM id's place in the range, so a
VM tends to get the same address each time, and skips the addresses this
node's other VMs hold.
"""

from __future__ import annotations

import ipaddress
from qvd.hkd.hypervisor import LaunchError

RANGE_KEY = "vm.process.ip.range"


def parse_range(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """``first-last`` (two IPv4 addresses, first <= last)."""
    first_text, dash, last_text = text.partition("-")
    try:
        if not dash:
            raise ValueError("expected first-last")
        first = ipaddress.IPv4Address(first_text.strip())
        last = ipaddress.IPv4Address(last_text.strip())
    except ValueError as e:
        raise LaunchError(f"bad {RANGE_KEY} {text!r}: {e}") from None
    if last < first:
        raise LaunchError(f"bad {RANGE_KEY} {text!r}: the last address is below the first")
    return first, last


def pick(text: str, vm_id: int, taken: set[str]) -> str:
    """A free address of the range for ``vm_id``; ``LaunchError`` if none is left."""
    first, last = parse_range(text)
    size = int(last) - int(first) + 1
    for i in range(size):
        candidate = str(first + (vm_id + i) % size)
        if candidate not in taken:
            return candidate
    raise LaunchError(f"no free address left in {RANGE_KEY} {text} ({size} VMs run here)")
