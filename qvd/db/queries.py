"""Every SQL statement the daemons run, as named functions over a ``Database``.

Keeping the SQL in one place makes the schema contract (QVD 4.3.0 table
and column names) reviewable at a glance; all of it is parameterised.
"""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.db.pool import Database

ConfigRows = list[tuple[int, str, str]]
SslRows = list[tuple[str, str]]


def load_configs(db: Database) -> defer.Deferred[tuple[ConfigRows, SslRows]]:
    """Every ``configs`` row (all tenants) and every ``ssl_configs`` row, from one snapshot."""
    return db.run_interaction(_read_configs)


@defer.inlineCallbacks
def _read_configs(cursor: Cursor) -> Generator[defer.Deferred[Any], Any, tuple[ConfigRows, SslRows]]:
    yield cursor.execute("SELECT tenant_id, key, value FROM configs")
    rows = cursor.fetchall()
    yield cursor.execute("SELECT key, value FROM ssl_configs")
    return rows, cursor.fetchall()


# -- load balancer -----------------------------------------------------------------

# Every host with what the load balancer needs (``qvd.loadbalancer.candidate``);
# also run by ``qa`` on its blocking connection.
LB_CANDIDATES = (
    "SELECT h.id, h.name, h.backend, r.blocked, r.state,"
    " EXTRACT(EPOCH FROM now() - r.ok_ts), r.usable_ram, r.usable_cpu,"
    " (SELECT count(*) FROM vm_runtimes v WHERE v.host_id = h.id)"
    " FROM hosts h JOIN host_runtimes r ON r.host_id = h.id ORDER BY h.id"
)


def lb_candidates(db: Database) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(LB_CANDIDATES)


# -- HKD: host ------------------------------------------------------------------------

def schema_versions(db: Database) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query("SELECT version FROM versions WHERE component = 'schema'")


def host_by_name(db: Database, name: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query("SELECT id, address FROM hosts WHERE name = %s", (name,))


def set_host_state(db: Database, host_id: int, state: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(
        "UPDATE host_runtimes SET state = %s WHERE host_id = %s RETURNING host_id",
        (state, host_id))


def heartbeat(
    db: Database, host_id: int, pid: int, free_ram: float, free_cpu: float
) -> defer.Deferred[list[tuple[Any, ...]]]:
    """One tick; no row back means the host was marked ``lost`` (or deleted)."""
    return db.run_query(
        "UPDATE host_runtimes SET ok_ts = now(), pid = %s, usable_ram = %s, usable_cpu = %s"
        " WHERE host_id = %s AND state <> 'lost' RETURNING host_id",
        (pid, free_ram, free_cpu, host_id))


def take_host_cmd(db: Database, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """The pending host command, consumed atomically."""
    return db.run_query(
        "UPDATE host_runtimes h SET cmd = NULL FROM"
        " (SELECT host_id, cmd FROM host_runtimes WHERE host_id = %s AND cmd IS NOT NULL"
        " FOR UPDATE) o WHERE h.host_id = o.host_id RETURNING o.cmd",
        (host_id,))


# -- HKD: VM commands and runtime rows ------------------------------------------------

def unfinished_vms(db: Database, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """VMs this host left in a non-stopped state (the zombie scan)."""
    return db.run_query(
        "SELECT vm_id, vm_state FROM vm_runtimes WHERE host_id = %s AND vm_state <> 'stopped'"
        " ORDER BY vm_id", (host_id,))


def claim_vm_stops(db: Database, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(
        "UPDATE vm_runtimes SET vm_cmd = NULL WHERE host_id = %s AND vm_cmd = 'stop'"
        " RETURNING vm_id", (host_id,))


def claim_vm_starts(db: Database, host_id: int, now: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(
        "UPDATE vm_runtimes SET vm_cmd = NULL, vm_state = 'starting', vm_state_ts = %s"
        " WHERE host_id = %s AND vm_cmd = 'start' AND vm_state = 'stopped' RETURNING vm_id",
        (now, host_id))


def vm_start_info(db: Database, vm_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """The VM, its owner and the unblocked DI its tag names (QVD 4 loading_row + searching_di)."""
    return db.run_query(
        "SELECT v.id, v.name, v.user_id, u.login, v.osf_id, v.di_tag, v.ip, d.id, d.path,"
        " o.memory, o.user_storage_size"
        " FROM vms v JOIN users u ON u.id = v.user_id JOIN osfs o ON o.id = v.osf_id"
        " JOIN dis d ON d.osf_id = v.osf_id AND NOT d.blocked"
        " JOIN di_tags t ON t.di_id = d.id AND t.tag = v.di_tag"
        " WHERE v.id = %s", (vm_id,))


def save_vm_runtime(
    db: Database, vm_id: int, host_id: int, address: str, ports: dict[str, int], pid: int,
    di_id: int,
) -> defer.Deferred[list[tuple[Any, ...]]]:
    """Where the launched VM is reached, and its real pid (QVD 4 always saved NULL)."""
    return db.run_query(
        "UPDATE vm_runtimes SET vm_address = %s, vm_vma_port = %s, vm_x_port = %s,"
        " vm_ssh_port = %s, vm_vnc_port = %s, vm_serial_port = %s, vm_mon_port = %s,"
        " vm_pid = %s, current_di_id = %s WHERE vm_id = %s AND host_id = %s RETURNING vm_id",
        (address, ports["vma"], ports["x"], ports["ssh"], ports["vnc"], ports["serial"],
         ports["mon"], pid, di_id, vm_id, host_id))


def count_vm_run(db: Database, vm_id: int, column: str) -> defer.Deferred[None]:
    """``vm_counters.run_attempts`` or ``run_ok`` + 1."""
    if column not in ("run_attempts", "run_ok"):
        raise ValueError(f"not a vm counter: {column}")
    return db.run_operation(
        f"UPDATE vm_counters SET {column} = {column} + 1 WHERE vm_id = %s", (vm_id,))


def set_vm_state(
    db: Database, vm_id: int, host_id: int, state: str, now: int
) -> defer.Deferred[list[tuple[Any, ...]]]:
    """Conditional on ``host_id``, so a VM released by the cluster monitor stays released."""
    return db.run_query(
        "UPDATE vm_runtimes SET vm_state = %s, vm_state_ts = %s"
        " WHERE vm_id = %s AND host_id = %s RETURNING vm_id",
        (state, now, vm_id, host_id))


def clear_vm_runtime(db: Database, vm_id: int, host_id: int, now: int) -> defer.Deferred[None]:
    """The end of every stop path: ``stopped``, unassigned, ports and pid gone."""
    return db.run_operation(
        "UPDATE vm_runtimes SET vm_state = 'stopped', vm_state_ts = %s, host_id = NULL,"
        " vm_address = NULL, vm_vma_port = NULL, vm_x_port = NULL, vm_ssh_port = NULL,"
        " vm_vnc_port = NULL, vm_serial_port = NULL, vm_mon_port = NULL, vm_pid = NULL,"
        " vm_cmd = NULL, vm_expiration_soft = NULL, vm_expiration_hard = NULL,"
        " vma_ok_ts = NULL, current_di_id = NULL WHERE vm_id = %s AND host_id = %s",
        (now, vm_id, host_id))


def touch_vma_ok(db: Database, vm_id: int, host_id: int, now: int) -> defer.Deferred[None]:
    return db.run_operation(
        "UPDATE vm_runtimes SET vma_ok_ts = %s WHERE vm_id = %s AND host_id = %s",
        (now, vm_id, host_id))


def expired_vms(db: Database, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(vm_id, soft text, hard text, soft expired, hard expired) of running VMs past a limit."""
    return db.run_query(
        "SELECT vm_id, vm_expiration_soft::text, vm_expiration_hard::text,"
        " COALESCE(vm_expiration_soft < now(), FALSE), COALESCE(vm_expiration_hard < now(), FALSE)"
        " FROM vm_runtimes WHERE host_id = %s AND vm_state = 'running'"
        " AND (vm_expiration_soft < now() OR vm_expiration_hard < now()) ORDER BY vm_id",
        (host_id,))


# -- HKD: cluster monitor --------------------------------------------------------------

def release_lost_hosts(
    db: Database, host_id: int, timeout: float, now: int
) -> defer.Deferred[tuple[list[int], list[int]]]:
    """Mark silent hosts ``lost`` and release their VMs and sessions, in one transaction.

    Fires with (hosts marked lost, L7R hosts to NOTIFY about sessions to abort).
    """
    return db.run_interaction(_release_lost_hosts, host_id, timeout, now)


@defer.inlineCallbacks
def _release_lost_hosts(
    cursor: Cursor, host_id: int, timeout: float, now: int
) -> Generator[defer.Deferred[Any], Any, tuple[list[int], list[int]]]:
    yield cursor.execute(
        "UPDATE host_runtimes SET state = 'lost' WHERE host_id <> %s"
        " AND state NOT IN ('stopped', 'starting', 'lost')"
        " AND (ok_ts IS NULL OR now() - ok_ts > make_interval(secs => %s)) RETURNING host_id",
        (host_id, timeout))
    lost = [row[0] for row in cursor.fetchall()]
    yield cursor.execute(
        "UPDATE vm_runtimes SET vm_state = 'stopped', vm_state_ts = %s, host_id = NULL,"
        " vm_address = NULL, vm_vma_port = NULL, vm_x_port = NULL, vm_ssh_port = NULL,"
        " vm_vnc_port = NULL, vm_serial_port = NULL, vm_mon_port = NULL, vm_pid = NULL,"
        " vm_expiration_soft = NULL, vm_expiration_hard = NULL, vma_ok_ts = NULL,"
        " current_di_id = NULL WHERE vm_state <> 'stopped' AND host_id IN"
        " (SELECT host_id FROM host_runtimes WHERE state = 'lost')", (now,))
    yield cursor.execute(
        "UPDATE vm_runtimes SET user_state = 'disconnected', user_state_ts = %s,"
        " user_cmd = NULL, l7r_host_id = NULL, l7r_pid = NULL"
        " WHERE user_state <> 'disconnected' AND l7r_host_id IN"
        " (SELECT host_id FROM host_runtimes WHERE state = 'lost')", (now,))
    # QVD 4 meant this (its version never matched): sessions still connected
    # to a VM that is gone must be aborted by the L7R that holds them.
    yield cursor.execute(
        "WITH a AS (UPDATE vm_runtimes SET user_cmd = 'abort' WHERE user_state = 'connected'"
        " AND vm_state = 'stopped' AND user_cmd IS NULL AND l7r_host_id IS NOT NULL"
        " RETURNING l7r_host_id) SELECT DISTINCT l7r_host_id FROM a")
    l7r_hosts = [row[0] for row in cursor.fetchall()]
    return lost, l7r_hosts


def notify(db: Database, channel: str) -> defer.Deferred[None]:
    return db.run_operation("SELECT pg_notify(%s, '')", (channel,))
