"""The ``vms`` and ``vm_runtimes`` tables as the L7R and ``qa`` use them: what a VM is,
who may list it, its properties, and the commands that start and stop it.

The command statements notify the node that acts on them in the same statement, and
are one SQL text each that the L7R (asynchronously) and ``qa`` (on its blocking
connection) both run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.db import channels
from qvd.db.pool import Database
from qvd.db.rows import each, first


@dataclass(frozen=True)
class VMRow:
    """The L7R's view of one VM."""

    id: int
    name: str
    user_id: int
    osf_id: int
    di_tag: str
    host_id: Optional[int]
    vm_state: str
    vm_cmd: Optional[str]
    user_state: str
    user_cmd: Optional[str]
    l7r_host_id: Optional[int]
    l7r_pid: Optional[int]
    blocked: bool
    vm_address: Optional[str]
    vma_port: Optional[int]
    x_port: Optional[int]


VM_ROW = (
    "SELECT v.id, v.name, v.user_id, v.osf_id, v.di_tag, r.host_id, r.vm_state, r.vm_cmd,"
    " r.user_state, r.user_cmd, r.l7r_host_id, r.l7r_pid, COALESCE(r.blocked, FALSE),"
    " r.vm_address, r.vm_vma_port, r.vm_x_port"
    " FROM vms v JOIN vm_runtimes r ON r.vm_id = v.id WHERE v.id = %s"
)


def vm_row(db: Database, vm_id: int) -> defer.Deferred[Optional[VMRow]]:
    return db.run_read(VM_ROW, (vm_id,)).addCallback(first(VMRow))


@dataclass(frozen=True)
class VMListing:
    """One entry of a user's ``list_of_vm`` (or ``list_of_applications``)."""

    id: int
    name: str
    state: str
    blocked: bool
    is_application: bool


def vms_of_user(db: Database, user_id: int, is_application: bool) -> defer.Deferred[list[VMListing]]:
    return db.run_read(
        "SELECT v.id, v.name, r.vm_state, COALESCE(r.blocked, FALSE), o.is_application"
        " FROM vms v JOIN vm_runtimes r ON r.vm_id = v.id JOIN osfs o ON o.id = v.osf_id"
        " WHERE v.user_id = %s AND o.is_application = %s ORDER BY v.id",
        (user_id, is_application)).addCallback(each(VMListing))


# -- properties -----------------------------------------------------------------------

@dataclass(frozen=True)
class Property:
    level: int  # 1 OSF, 2 the booted DI, 3 user, 4 VM: a higher level wins
    key: str
    value: str


def _properties_of(table: str, key: str, owner_sql: str, level: int) -> str:
    return (
        f"SELECT {level} AS level, pl.key, p.value FROM {table} p"
        " JOIN qvd_object_properties_list q ON q.id = p.property_id"
        f" JOIN properties_list pl ON pl.id = q.property_id WHERE p.{key} = ({owner_sql})"
    )


VM_PROPERTIES = " UNION ALL ".join([
    _properties_of("osf_properties", "osf_id", "SELECT osf_id FROM vms WHERE id = %(vm)s", 1),
    _properties_of("di_properties", "di_id",
                   "SELECT current_di_id FROM vm_runtimes WHERE vm_id = %(vm)s", 2),
    _properties_of("user_properties", "user_id", "SELECT user_id FROM vms WHERE id = %(vm)s", 3),
    _properties_of("vm_properties", "vm_id", "SELECT %(vm)s", 4),
]) + " ORDER BY level"


def vm_properties(db: Database, vm_id: int) -> defer.Deferred[list[Property]]:
    """Every property of the VM and of what it is made of, in precedence order."""
    return db.run_read(VM_PROPERTIES, {"vm": vm_id}).addCallback(each(Property))


# -- commands -------------------------------------------------------------------------

# Ask the VM's node to start it (placing it on ``host`` if it has no host yet); a VM
# that is not stopped, or already placed elsewhere, is left alone.
START_VM = (
    "WITH started AS (UPDATE vm_runtimes SET host_id = %(host)s, vm_cmd = 'start'"
    " WHERE vm_id = %(vm)s AND vm_state = 'stopped' AND (vm_cmd IS NULL OR vm_cmd = 'start')"
    " AND (host_id IS NULL OR host_id = %(host)s) RETURNING host_id)"
    f" SELECT pg_notify('{channels.VM_COMMANDS}' || host_id, '') FROM started"
)
# Ask the VM's node to stop it, if it is starting, running or debugging there.
STOP_VM = (
    "WITH stopping AS (UPDATE vm_runtimes SET vm_cmd = 'stop' WHERE vm_id = %(vm)s"
    " AND vm_state IN ('starting', 'running', 'debugging') AND host_id IS NOT NULL"
    " RETURNING host_id)"
    f" SELECT pg_notify('{channels.VM_COMMANDS}' || host_id, '') FROM stopping"
)
# Ask the L7R holding the VM's session to end it.
ABORT_SESSION = (
    "WITH aborting AS (UPDATE vm_runtimes SET user_cmd = 'abort' WHERE vm_id = %(vm)s"
    " RETURNING l7r_host_id)"
    f" SELECT pg_notify('{channels.USER_COMMANDS}' || l7r_host_id, '') FROM aborting"
    " WHERE l7r_host_id IS NOT NULL"
)


def assign_host(db: Database, vm_id: int, host_id: int) -> defer.Deferred[bool]:
    """Store the chosen host, only if the VM still has none and is stopped."""
    return db.run_query(
        "UPDATE vm_runtimes SET host_id = %s WHERE vm_id = %s AND host_id IS NULL"
        " AND vm_state = 'stopped' RETURNING vm_id", (host_id, vm_id)).addCallback(bool)


def request_vm_start(db: Database, vm_id: int, host_id: int) -> defer.Deferred[None]:
    return db.run_operation(START_VM, {"vm": vm_id, "host": host_id})


def request_vm_stop(db: Database, vm_id: int) -> defer.Deferred[str]:
    """Ask for a stop when the VM can stop; the state it was in."""
    return db.run_interaction(_request_vm_stop, vm_id)


@defer.inlineCallbacks
def _request_vm_stop(cursor: Cursor, vm_id: int) -> Generator[defer.Deferred[Any], Any, str]:
    yield cursor.execute("SELECT vm_state FROM vm_runtimes WHERE vm_id = %s FOR UPDATE", (vm_id,))
    (state,) = cursor.fetchone()
    yield cursor.execute(STOP_VM, {"vm": vm_id})
    return state
