"""``qa vm ... start|stop|disconnect``: commands the HKD and the L7R act on.

Each sets the VM's command column and notifies the node that acts on it;
``start`` places a VM without a host with the load balancer first.
"""

from __future__ import annotations

from typing import Callable

from qvd.admin.base import AdminBase, AdminError, Result, filter_or_arguments
from qvd.admin.command import Command
from qvd.admin.objects import ObjectKind
from qvd.db.queries import LB_CANDIDATES
from qvd.loadbalancer import NoHostAvailable, VMInfo, candidate, choose_host


class VMControlMixin(AdminBase):
    """``vm start|stop|disconnect``, on the VMs in a state that allows it."""

    def _vm_rows(self, cur, kind: ObjectKind, command: Command) -> list[tuple]:
        """(id, vm_state, host_id, user_state, l7r_host_id, name, user_id, osf_id, di_tag),
        locked, of the VMs the command names."""
        ids = self._ids(cur, kind, filter_or_arguments(command))
        cur.execute("SELECT v.id, r.vm_state, r.host_id, r.user_state, r.l7r_host_id, v.name,"
                    " v.user_id, v.osf_id, v.di_tag FROM vms v JOIN vm_runtimes r"
                    " ON r.vm_id = v.id WHERE v.id = ANY(%s) ORDER BY v.id FOR UPDATE OF r",
                    (ids,))
        return cur.fetchall()

    @staticmethod
    def _acting_on(rows: list[tuple], fits: Callable[[tuple], bool], refusal: str) -> list[tuple]:
        """The rows the action applies to; an error if it applies to none of those named.

        ``qa vm start`` (any filter) starts the stopped VMs among those it names,
        as qa4 does; naming only VMs in the wrong state is the error.
        """
        chosen = [row for row in rows if fits(row)]
        if rows and not chosen:
            vm_id, state, _, user_state = rows[0][:4]
            raise AdminError(refusal.format(vm_id=vm_id, state=state, user_state=user_state))
        return chosen

    def _vm_start(self, cur, kind: ObjectKind, command: Command) -> Result:
        """``start`` for stopped VMs, on a host chosen by the load balancer if they have none."""
        rows = self._acting_on(self._vm_rows(cur, kind, command), lambda r: r[1] == "stopped",
                               "vm {vm_id} is {state}: only a stopped vm can be started")
        for vm_id, _, host_id, _, _, name, user_id, osf_id, di_tag in rows:
            if host_id is None:
                cur.execute(LB_CANDIDATES)
                try:
                    host_id = choose_host(self.config, VMInfo(vm_id, name, user_id, osf_id, di_tag),
                                          [candidate(row) for row in cur.fetchall()])
                except NoHostAvailable as e:
                    raise AdminError(f"vm {vm_id} cannot start: {e}") from None
            cur.execute("UPDATE vm_runtimes SET host_id = %s, vm_cmd = 'start' WHERE vm_id = %s",
                        (host_id, vm_id))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))
        return Result(len(rows))

    def _vm_stop(self, cur, kind: ObjectKind, command: Command) -> Result:
        rows = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda r: r[1] in ("starting", "running", "debugging") and r[2] is not None,
            "vm {vm_id} is {state}: only a starting, running or debugging vm can be stopped")
        for vm_id, _, host_id, *_ in rows:
            cur.execute("UPDATE vm_runtimes SET vm_cmd = 'stop' WHERE vm_id = %s", (vm_id,))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))
        return Result(len(rows))

    def _vm_disconnect(self, cur, kind: ObjectKind, command: Command) -> Result:
        """Ask the L7R holding the session to close it (QVD 4's API did not notify)."""
        rows = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda r: r[3] in ("connecting", "connected") and r[4] is not None,
            "vm {vm_id} has no user connected (user state {user_state})")
        for vm_id, _, _, _, l7r_host_id, *_ in rows:
            cur.execute("UPDATE vm_runtimes SET user_cmd = 'abort' WHERE vm_id = %s", (vm_id,))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_user_on_host{l7r_host_id}",))
        return Result(len(rows))
