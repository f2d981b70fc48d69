"""The VM side of ``vm_runtimes`` (and ``vm_counters``) as the HKD's state machine keeps
it: commands claimed, where a started VM is reached, its state, its end; and the
cluster monitor's release of the VMs of lost hosts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.db.pool import Database
from qvd.db.rows import column, each
from qvd.db.sessions import SESSION_GONE

# What a VM's end writes: stopped, unassigned, nothing left to reach it by.
VM_GONE = ("vm_state = 'stopped', vm_state_ts = %(now)s, host_id = NULL, vm_address = NULL,"
           " vm_vma_port = NULL, vm_x_port = NULL, vm_ssh_port = NULL, vm_vnc_port = NULL,"
           " vm_serial_port = NULL, vm_mon_port = NULL, vm_pid = NULL,"
           " vm_expiration_soft = NULL, vm_expiration_hard = NULL, vma_ok_ts = NULL,"
           " current_di_id = NULL")


@dataclass(frozen=True)
class UnfinishedVM:
    vm_id: int
    vm_state: str


def unfinished_vms(db: Database, host_id: int) -> defer.Deferred[list[UnfinishedVM]]:
    """VMs this host left in a non-stopped state (the zombie scan)."""
    return db.run_read(
        "SELECT vm_id, vm_state FROM vm_runtimes WHERE host_id = %s AND vm_state <> 'stopped'"
        " ORDER BY vm_id", (host_id,)).addCallback(each(UnfinishedVM))


def claim_vm_stops(db: Database, host_id: int) -> defer.Deferred[list[int]]:
    return db.run_query(
        "UPDATE vm_runtimes SET vm_cmd = NULL WHERE host_id = %s AND vm_cmd = 'stop'"
        " RETURNING vm_id", (host_id,)).addCallback(column)


def claim_vm_starts(db: Database, host_id: int, now: int) -> defer.Deferred[list[int]]:
    return db.run_query(
        "UPDATE vm_runtimes SET vm_cmd = NULL, vm_state = 'starting', vm_state_ts = %s"
        " WHERE host_id = %s AND vm_cmd = 'start' AND vm_state = 'stopped' RETURNING vm_id",
        (now, host_id)).addCallback(column)


@dataclass(frozen=True)
class VMSpec:
    """What a backend needs to start one VM (QVD 4's loading_row + searching_di)."""

    vm_id: int
    name: str
    user_id: int
    login: str
    osf_id: int
    di_tag: str
    ip: Optional[str]
    di_id: int
    di_path: str
    memory: int
    user_storage_size: Optional[int]
    use_overlay: bool


def vm_start_specs(db: Database, vm_id: int) -> defer.Deferred[list[VMSpec]]:
    """The VM with its owner and each unblocked DI its tag names (one, when it can start)."""
    return db.run_read(
        "SELECT v.id, v.name, v.user_id, u.login, v.osf_id, v.di_tag, v.ip, d.id, d.path,"
        " o.memory, o.user_storage_size, o.use_overlay"
        " FROM vms v JOIN users u ON u.id = v.user_id JOIN osfs o ON o.id = v.osf_id"
        " JOIN dis d ON d.osf_id = v.osf_id AND NOT d.blocked"
        " JOIN di_tags t ON t.di_id = d.id AND t.tag = v.di_tag"
        " WHERE v.id = %s", (vm_id,)).addCallback(each(VMSpec))


def save_vm_runtime(
    db: Database, vm_id: int, host_id: int, address: str, ports: dict[str, int], pid: int,
    di_id: int,
) -> defer.Deferred[bool]:
    """Where the launched VM is reached, and its real pid (QVD 4 always saved NULL); False
    if the VM is no longer this host's."""
    return db.run_query(
        "UPDATE vm_runtimes SET vm_address = %s, vm_vma_port = %s, vm_x_port = %s,"
        " vm_ssh_port = %s, vm_vnc_port = %s, vm_serial_port = %s, vm_mon_port = %s,"
        " vm_pid = %s, current_di_id = %s WHERE vm_id = %s AND host_id = %s RETURNING vm_id",
        (address, ports["vma"], ports["x"], ports["ssh"], ports["vnc"], ports["serial"],
         ports["mon"], pid, di_id, vm_id, host_id)).addCallback(bool)


def count_vm_run(db: Database, vm_id: int, column_name: str) -> defer.Deferred[None]:
    """``vm_counters.run_attempts`` or ``run_ok`` + 1."""
    if column_name not in ("run_attempts", "run_ok"):
        raise ValueError(f"not a vm counter: {column_name}")
    return db.run_operation(
        f"UPDATE vm_counters SET {column_name} = {column_name} + 1 WHERE vm_id = %s", (vm_id,))


def set_vm_state(db: Database, vm_id: int, host_id: int, state: str, now: int) -> defer.Deferred[bool]:
    """Conditional on ``host_id``, so a VM released by the cluster monitor stays released;
    False if it was."""
    return db.run_query(
        "UPDATE vm_runtimes SET vm_state = %s, vm_state_ts = %s"
        " WHERE vm_id = %s AND host_id = %s RETURNING vm_id",
        (state, now, vm_id, host_id)).addCallback(bool)


def clear_vm_runtime(db: Database, vm_id: int, host_id: int, now: int) -> defer.Deferred[None]:
    """The end of every stop path: ``stopped``, unassigned, ports and pid gone."""
    return db.run_operation(
        f"UPDATE vm_runtimes SET {VM_GONE}, vm_cmd = NULL WHERE vm_id = %(vm)s"
        " AND host_id = %(host)s", {"now": now, "vm": vm_id, "host": host_id})


def touch_vma_ok(db: Database, vm_id: int, host_id: int, now: int) -> defer.Deferred[None]:
    return db.run_operation(
        "UPDATE vm_runtimes SET vma_ok_ts = %s WHERE vm_id = %s AND host_id = %s",
        (now, vm_id, host_id))


@dataclass(frozen=True)
class Expiry:
    """A running VM past one of its expiration times."""

    vm_id: int
    soft: Optional[str]  # as the VMA's ``expire`` hook is told it
    hard: Optional[str]
    soft_due: bool
    hard_due: bool


def expired_vms(db: Database, host_id: int) -> defer.Deferred[list[Expiry]]:
    return db.run_read(
        "SELECT vm_id, vm_expiration_soft::text, vm_expiration_hard::text,"
        " COALESCE(vm_expiration_soft < now(), FALSE), COALESCE(vm_expiration_hard < now(), FALSE)"
        " FROM vm_runtimes WHERE host_id = %s AND vm_state = 'running'"
        " AND (vm_expiration_soft < now() OR vm_expiration_hard < now()) ORDER BY vm_id",
        (host_id,)).addCallback(each(Expiry))


# -- the cluster monitor ----------------------------------------------------------------

@dataclass(frozen=True)
class LostHosts:
    lost: list[int]  # hosts marked lost now
    l7r_hosts: list[int]  # hosts whose L7Rs hold sessions of VMs that are gone


def release_lost_hosts(db: Database, host_id: int, timeout: float,
                       now: int) -> defer.Deferred[LostHosts]:
    """Mark silent hosts ``lost`` and release their VMs and sessions, in one transaction.

    Silence is counted from the last heartbeat, or from the server's start if that
    is later: while PostgreSQL was down or restarting no host could tick, and
    counting that time would have every node fence the others after an outage
    longer than ``cluster.node.timeout``.
    """
    return db.run_interaction(_release_lost_hosts, host_id, timeout, now)


@defer.inlineCallbacks
def _release_lost_hosts(
    cursor: Cursor, host_id: int, timeout: float, now: int
) -> Generator[defer.Deferred[Any], Any, LostHosts]:
    yield cursor.execute(
        "UPDATE host_runtimes SET state = 'lost' WHERE host_id <> %s"
        " AND state NOT IN ('stopped', 'starting', 'lost')"
        " AND (ok_ts IS NULL OR now() - GREATEST(ok_ts,"
        " pg_postmaster_start_time() AT TIME ZONE 'UTC') > make_interval(secs => %s))"
        " RETURNING host_id",
        (host_id, timeout))
    lost = column(cursor.fetchall())
    on_lost = "(SELECT host_id FROM host_runtimes WHERE state = 'lost')"
    yield cursor.execute(
        f"UPDATE vm_runtimes SET {VM_GONE} WHERE vm_state <> 'stopped' AND host_id IN {on_lost}",
        {"now": now})
    yield cursor.execute(
        f"UPDATE vm_runtimes SET {SESSION_GONE} WHERE user_state <> 'disconnected'"
        f" AND l7r_host_id IN {on_lost}", {"now": now})
    # QVD 4 meant this (its version never matched): sessions still connected
    # to a VM that is gone must be aborted by the L7R that holds them.
    yield cursor.execute(
        "WITH a AS (UPDATE vm_runtimes SET user_cmd = 'abort' WHERE user_state = 'connected'"
        " AND vm_state = 'stopped' AND user_cmd IS NULL AND l7r_host_id IS NOT NULL"
        " RETURNING l7r_host_id) SELECT DISTINCT l7r_host_id FROM a")
    return LostHosts(lost, column(cursor.fetchall()))
