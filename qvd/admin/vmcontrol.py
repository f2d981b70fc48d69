"""``qa vm ... start|stop|disconnect``: commands the HKD and the L7R act on.

Each sets the VM's command column and notifies the node that acts on it;
``start`` places a VM without a host with the load balancer first.
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

    @staticmethod
    def _acting_on(vms: list[ControlledVM], fits: Callable[[ControlledVM], bool],
                   refusal: str) -> list[ControlledVM]:
        """The VMs the action applies to; an error if it applies to none of those named.

        ``qa vm start`` (any filter) starts the stopped VMs among those it names,
        as qa4 does; naming only VMs in the wrong state is the error.
        """
        chosen = [vm for vm in vms if fits(vm)]
        if vms and not chosen:
            raise AdminError(refusal.format(vm_id=vms[0].id, state=vms[0].vm_state,
                                            user_state=vms[0].user_state))
        return chosen

    def _vm_start(self, cur, kind: ObjectKind, command: Command) -> Result:
        """``start`` for stopped VMs, on a host chosen by the load balancer if they have none."""
        vms = self._acting_on(self._vm_rows(cur, kind, command), lambda vm: vm.vm_state == "stopped",
                              "vm {vm_id} is {state}: only a stopped vm can be started")
        for vm in vms:
            host_id = vm.host_id
            if host_id is None:
                cur.execute(LB_CANDIDATES)
                try:
                    host_id = choose_host(
                        self.config, VMInfo(vm.id, vm.name, vm.user_id, vm.osf_id, vm.di_tag),
                        candidates(cur.fetchall()))
                except NoHostAvailable as e:
                    raise AdminError(f"vm {vm.id} cannot start: {e}") from None
            cur.execute(START_VM, {"vm": vm.id, "host": host_id})
        return Result(len(vms))

    def _vm_stop(self, cur, kind: ObjectKind, command: Command) -> Result:
        vms = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda vm: vm.vm_state in ("starting", "running", "debugging") and vm.host_id is not None,
            "vm {vm_id} is {state}: only a starting, running or debugging vm can be stopped")
        for vm in vms:
            cur.execute(STOP_VM, {"vm": vm.id})
        return Result(len(vms))

    def _vm_disconnect(self, cur, kind: ObjectKind, command: Command) -> Result:
        """Ask the L7R holding the session to close it (QVD 4's API did not notify)."""
        vms = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda vm: vm.user_state in ("connecting", "connected") and vm.l7r_host_id is not None,
            "vm {vm_id} has no user connected (user state {user_state})")
        for vm in vms:
            cur.execute(ABORT_SESSION, {"vm": vm.id})
        return Result(len(vms))
