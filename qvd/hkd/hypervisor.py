"""The seam between the VM state machine and the VM backends.

The state machine (``qvd.hkd.vm``) only launches, adopts, signals and
releases ``IVMInstance``s; a backend (the built-in ``process`` one, libvirt's
``kvm`` and ``lxc``) implements ``IHypervisor`` and is listed in ``BACKENDS``.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.python.reflect import namedAny
from zope.interface import Attribute, Interface

from qvd.config import Config, ConfigError
from qvd.db.runtimes import VMSpec

BACKENDS = {"process": "qvd.hkd.process.ProcessHypervisor",
            "kvm": "qvd.hkd.virt.hypervisor.KVMHypervisor",
            "lxc": "qvd.hkd.virt.hypervisor.LXCHypervisor"}


class LaunchError(Exception):
    """The backend could not start the VM; the message says why."""


class IVMInstance(Interface):
    """One running VM as its backend sees it."""

    pid = Attribute("The pid of the VM's process (vm_runtimes.vm_pid).")
    address = Attribute("The address the VMA and nxagent are reached at.")
    ports = Attribute("dict vma/x/ssh/vnc/serial/mon -> port (0 = none), as vm_runtimes"
                      " stores them.")

    def when_exited() -> defer.Deferred[None]:
        """A new Deferred firing once the VM's process is gone (at once if it is)."""

    def signal(name: str) -> None:
        """Send ``TERM`` or ``KILL``; a VM already gone is not an error."""


class IHypervisor(Interface):
    name = Attribute("The vm.hypervisor value; also names the timeout keys"
                     " internal.hkd.<name>.timeout.on_state.*.")

    def start() -> defer.Deferred[None]:
        """Prepare the node before any VM is launched or adopted (network, DHCP...)."""

    def stop() -> defer.Deferred[None]:
        """Undo ``start`` once every VM is stopped."""

    def launch(spec: VMSpec) -> defer.Deferred[IVMInstance]:
        """Start the VM; fails with ``LaunchError``."""

    def adopt(vm_id: int) -> defer.Deferred[Optional[IVMInstance]]:
        """The VM a previous HKD left running, if it still runs (and is really that VM)."""

    def release(vm_id: int) -> defer.Deferred[None]:
        """Forget a VM whose process is gone (state files, addresses)."""

    def reap_strays(keep: set[int]) -> defer.Deferred[list[int]]:
        """Kill the VMs an earlier HKD left running that are not in ``keep`` (QVD-DB gave
        them away meanwhile, e.g. to another host while this one was lost); their ids."""


def check_hypervisor(config: Config) -> str:
    """The configured backend's name, if this release has it and the configuration
    suits it (a backend class may check it in a ``check_config(config)`` static method)."""
    name = config.get("vm.hypervisor").strip()
    if name not in BACKENDS:
        raise ConfigError(
            f"vm.hypervisor = {name!r} is not available in this release"
            f" (available: {', '.join(sorted(BACKENDS))})")
    getattr(namedAny(BACKENDS[name]), "check_config", lambda config: None)(config)
    return name


def make_hypervisor(config: Config, reactor: Any) -> IHypervisor:
    return namedAny(BACKENDS[check_hypervisor(config)])(config, reactor)
