"""``qa vm ... start|stop|disconnect``: commands the HKD and the L7R act on.

Each sets the VM's command column and notifies the node that acts on it;
``start`` places a VM without a host with the load balancer first.  A filter
naming many VMs acts on those it can and reports the others (in the wrong
state, no host for them) in ``Result.failures``; only when it can act on none
does the command fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from qvd.admin.base import AdminBase, AdminError, Result, filter_or_arguments
from qvd.admin.command import Command
from qvd.admin.objects import ObjectKind
from qvd.db.hosts import LB_CANDIDATES, candidates
from qvd.db.rows import each
from qvd.db.vms import ABORT_SESSION, START_VM, STOP_VM
from qvd.loadbalancer import NoHostAvailable, VMInfo, choose_host

# the administration API's codes for these refusals
CANNOT_DISCONNECT, CANNOT_STOP, CANNOT_START, NO_HOST = 5110, 5120, 5130, 5140


@dataclass(frozen=True)
class ControlledVM:
    """A VM a command names, as ``_vm_rows`` reads (and locks) it."""

    id: int
    vm_state: str
    host_id: Optional[int]
    user_state: str
    l7r_host_id: Optional[int]
    name: str
    user_id: int
    osf_id: int
    di_tag: str


class VMControlMixin(AdminBase):
    """``vm start|stop|disconnect``, on the VMs in a state that allows it."""

    def _vm_rows(self, cur, kind: ObjectKind, command: Command) -> list[ControlledVM]:
        """The VMs the command names, locked."""
        ids = self._ids(cur, kind, filter_or_arguments(command))
        cur.execute("SELECT v.id, r.vm_state, r.host_id, r.user_state, r.l7r_host_id, v.name,"
                    " v.user_id, v.osf_id, v.di_tag FROM vms v JOIN vm_runtimes r"
                    " ON r.vm_id = v.id WHERE v.id = ANY(%s) ORDER BY v.id FOR UPDATE OF r",
                    (ids,))
        return each(ControlledVM)(cur.fetchall())

    def _refuse(self, vm: ControlledVM, code: int, reason: str) -> None:
        """``vm`` is named but not acted on: reported, and audited with ``code``."""
        for target in self.touched:
            if target.id == vm.id:
                target.status, target.reason = code, reason

    def _outcome(self, acted: int) -> Result:
        """What a filtered command did: ``acted`` VMs, and why it left the others alone;
        an error when it could act on none of those it named."""
        refused = [t for t in self.touched if t.status]
        if refused and not acted:
            raise AdminError("; ".join(str(t.reason) for t in refused), refused[0].status)
        return Result(acted, failures={t.id: str(t.reason) for t in refused})

    def _acting_on(self, vms: list[ControlledVM], fits: Callable[[ControlledVM], bool],
                   code: int, refusal: str) -> list[ControlledVM]:
        """The VMs the action applies to; the others are refused with ``refusal``.

        ``qa vm start`` (any filter) starts the stopped VMs among those it names,
        as qa4 does, and tells which ones it left alone and why.
        """
        chosen = []
        for vm in vms:
            if fits(vm):
                chosen.append(vm)
            else:
                self._refuse(vm, code, refusal.format(vm_id=vm.id, name=vm.name,
                                                      state=vm.vm_state,
                                                      user_state=vm.user_state))
        return chosen

    def _vm_start(self, cur, kind: ObjectKind, command: Command) -> Result:
        """``start`` for stopped VMs, on a host chosen by the load balancer if they have none."""
        started = 0
        for vm in self._acting_on(self._vm_rows(cur, kind, command),
                                  lambda vm: vm.vm_state == "stopped", CANNOT_START,
                                  "vm {vm_id} ({name}) is {state}: only a stopped vm can be"
                                  " started"):
            host_id = vm.host_id
            if host_id is None:
                cur.execute(LB_CANDIDATES)
                try:
                    host_id = choose_host(
                        self.config, VMInfo(vm.id, vm.name, vm.user_id, vm.osf_id, vm.di_tag),
                        candidates(cur.fetchall()))
                except NoHostAvailable as e:
                    self._refuse(vm, NO_HOST, f"vm {vm.id} cannot start: {e}")
                    continue
            cur.execute(START_VM, {"vm": vm.id, "host": host_id})
            started += 1
        return self._outcome(started)

    def _vm_stop(self, cur, kind: ObjectKind, command: Command) -> Result:
        vms = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda vm: vm.vm_state in ("starting", "running", "debugging") and vm.host_id is not None,
            CANNOT_STOP,
            "vm {vm_id} ({name}) is {state}: only a starting, running or debugging vm can be"
            " stopped")
        for vm in vms:
            cur.execute(STOP_VM, {"vm": vm.id})
        return self._outcome(len(vms))

    def _vm_disconnect(self, cur, kind: ObjectKind, command: Command) -> Result:
        """Ask the L7R holding the session to close it (QVD 4's API did not notify)."""
        vms = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda vm: vm.user_state in ("connecting", "connected") and vm.l7r_host_id is not None,
            CANNOT_DISCONNECT, "vm {vm_id} ({name}) has no user connected (user state"
                               " {user_state})")
        for vm in vms:
            cur.execute(ABORT_SESSION, {"vm": vm.id})
        return self._outcome(len(vms))
