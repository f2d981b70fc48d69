"""Virtual machines: create (with the highest free address), update, delete
(stopped only), and the exec actions ``vm_start``, ``vm_stop``,
``vm_user_disconnect`` that the HKD and the L7R act on."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from qvd.db.provisioning import address_range, highest_free_address
from qvd.api.call import Call
from qvd.api.errors import APIError
from qvd.api.model import VM
from qvd.api.ops.changes import (
    PROPERTY_NESTED, Arg, Column, Spec, Target, apply_nested, convert, create_handler,
    creation_properties, delete_handler, each, insert_row, nested_property_acls, targets,
    update_handler,
)
from qvd.db.hosts import LB_CANDIDATES, candidates
from qvd.db.vms import ABORT_SESSION, START_VM, STOP_VM
from qvd.loadbalancer import NoHostAvailable, VMInfo, choose_host


def free_ip(call: Call) -> Any:
    return _FreeIP()


class _FreeIP:
    """Marker: allocate in the creating transaction."""


SPEC = Spec(
    model=VM,
    update={
        "name": Arg("vms", "id", "name"),
        "ip": Arg("vms", "id", "ip", "address"),
        "storage": Arg("vms", "id", "storage"),
        "di_tag": Arg("vms", "id", "di_tag"),
        "description": Arg("vms", "id", "description"),
        "blocked": Arg("vm_runtimes", "vm_id", "blocked", "bool"),
        "expiration_soft": Arg("vm_runtimes", "vm_id", "vm_expiration_soft", "timestamp"),
        "expiration_hard": Arg("vm_runtimes", "vm_id", "vm_expiration_hard", "timestamp"),
    },
    mandatory=("name", "user_id", "ip", "osf_id", "di_tag", "user_state", "blocked"),
    optional=("storage", "description", "expiration_soft", "expiration_hard"),
    defaults={"di_tag": "default", "blocked": "0", "user_state": "disconnected", "ip": free_ip},
    create_acls={"di_tag": r"^vm\.create\.di-tag$", "__properties__": r"^vm\.create\.properties$"},
    nested_acls=nested_property_acls("vm"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED,
    properties=True,
)


@defer.inlineCallbacks
def _allocate_ip(call: Call, cursor: Any) -> Generator[Any, Any, str]:
    yield cursor.execute("SELECT ip FROM vms WHERE ip IS NOT NULL")
    try:
        first, last = address_range(call.config)
        address = highest_free_address(first, last, (r[0] for r in cursor.fetchall()))
    except Exception as e:  # a bad vm.network.* setting
        raise APIError(6330, "ip", str(e)) from None
    if address is None:
        raise APIError(6330, "ip", "no free VM address left")
    return address


VM_COLUMNS = (Column("name", "name"), Column("di_tag", "di_tag"),
              Column("storage", "storage", missing=""), Column("description", "description"))


@defer.inlineCallbacks
def _insert(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    user_id = convert(call, "user_id", values["user_id"], "int")
    osf_id = convert(call, "osf_id", values["osf_id"], "int")
    yield cursor.execute("SELECT tenant_id FROM users WHERE id = %s", (user_id,))
    user = cursor.fetchone()
    yield cursor.execute("SELECT tenant_id FROM osfs WHERE id = %s", (osf_id,))
    osf = cursor.fetchone()
    if not call.admin.superadmin:
        if user is None or user[0] != call.admin.tenant_id:
            raise APIError(7110, "user_id")
        if osf is None or osf[0] != call.admin.tenant_id:
            raise APIError(7110, "osf_id")
    if user is None or osf is None:
        raise APIError(7110, "user_id" if user is None else "osf_id")
    if user[0] != osf[0]:
        raise APIError(7300)
    ip = values["ip"]
    ip = (yield _allocate_ip(call, cursor)) if isinstance(ip, _FreeIP) else \
        convert(call, "ip", ip, "address")
    if values["user_state"] not in ("disconnected", "connecting", "connected"):
        raise APIError(6330, "user_state")
    vm_id = yield insert_row(call, cursor, "vms", values, VM_COLUMNS,
                             given={"user_id": user_id, "osf_id": osf_id, "ip": ip})
    yield cursor.execute(
        "INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked, vm_expiration_soft,"
        " vm_expiration_hard) VALUES (%s, 'stopped', %s, %s, %s, %s)",
        (vm_id, values["user_state"], convert(call, "blocked", values["blocked"], "bool"),
         convert(call, "expiration_soft", values.get("expiration_soft"), "timestamp"),
         convert(call, "expiration_hard", values.get("expiration_hard"), "timestamp")))
    yield cursor.execute("INSERT INTO vm_counters (vm_id) VALUES (%s)", (vm_id,))
    yield apply_nested(items, {"__properties__": creation_properties(
        call, cursor, VM, Target(vm_id, None, user[0]))})
    return vm_id


vm_create = create_handler(SPEC, _insert)


vm_update = update_handler(SPEC)


@defer.inlineCallbacks
def _stopped(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    yield cursor.execute("SELECT vm_state FROM vm_runtimes WHERE vm_id = %s", (target.id,))
    row = cursor.fetchone()
    if row and row[0] != "stopped":
        raise APIError(7310)


vm_delete = delete_handler(VM, check=_stopped)


def _runtime(cursor: Any, vm_id: int) -> defer.Deferred[Any]:
    return cursor.execute(
        "SELECT vr.vm_state, vr.host_id, vr.user_state, vr.l7r_host_id, vr.vm_cmd, v.name,"
        " v.user_id, v.osf_id, v.di_tag FROM vm_runtimes vr JOIN vms v ON v.id = vr.vm_id"
        " WHERE vr.vm_id = %s FOR UPDATE OF vr", (vm_id,))


def _exec(work: Any) -> Any:
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        found = yield targets(call, VM, "exec")
        return (yield each(call, found, lambda cursor, target: work(call, cursor, target)))
    return handler


@defer.inlineCallbacks
def _start(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    yield _runtime(cursor, target.id)
    state, host_id, _, _, _, name, user_id, osf_id, di_tag = cursor.fetchone()
    if state != "stopped":
        raise APIError(5130, "vm_state")
    if host_id is None:
        yield cursor.execute(LB_CANDIDATES)
        try:
            host_id = choose_host(call.config, VMInfo(target.id, name, user_id, osf_id, di_tag),
                                  candidates(cursor.fetchall()))
        except NoHostAvailable:
            raise APIError(5140) from None
    yield cursor.execute(START_VM, {"vm": target.id, "host": host_id})
    yield cursor.execute("SELECT pg_notify('qvd_admin4_vm_start', %s)", (str(target.id),))


@defer.inlineCallbacks
def _stop(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    yield _runtime(cursor, target.id)
    state, host_id, _, _, cmd, *_ = cursor.fetchone()
    if state == "stopped" and cmd == "start":
        yield cursor.execute("UPDATE vm_runtimes SET vm_cmd = NULL WHERE vm_id = %s", (target.id,))
        return
    if state not in ("starting", "running", "debugging") or host_id is None:
        raise APIError(5120, "vm_state")
    yield cursor.execute(STOP_VM, {"vm": target.id})
    yield cursor.execute("SELECT pg_notify('qvd_admin4_vm_stop', %s)", (str(target.id),))


@defer.inlineCallbacks
def _disconnect(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    """QVD 4 set user_cmd without telling anyone; we notify the L7R holding the session."""
    yield _runtime(cursor, target.id)
    _, _, user_state, *_ = cursor.fetchone()
    if user_state not in ("connecting", "connected"):
        raise APIError(5110, "user_state")
    yield cursor.execute(ABORT_SESSION, {"vm": target.id})


vm_start = _exec(_start)
vm_stop = _exec(_stop)
vm_user_disconnect = _exec(_disconnect)

