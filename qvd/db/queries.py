"""Every SQL statement the daemons run, as named functions over a ``Database``.

Keeping the SQL in one place makes the schema contract (QVD 4.3.0 table
and column names) reviewable at a glance; all of it is parameterised.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.config import Config
from qvd.db.pool import Database

ConfigRows = list[tuple[int, str, str]]
SslRows = list[tuple[str, str]]


CONFIG_ROWS = "SELECT tenant_id, key, value FROM configs"
SSL_ROWS = "SELECT key, value FROM ssl_configs"


def apply_configs_now(conn: Any, config: Config) -> None:
    """Lay the configs and ssl_configs tables over ``config`` on a blocking connection
    (command-line tools, and daemons before their reactor runs)."""
    with conn, conn.cursor() as cur:
        cur.execute(CONFIG_ROWS)
        rows = cur.fetchall()
        cur.execute(SSL_ROWS)
        config.replace_db_rows(rows, cur.fetchall())


def load_configs(db: Database) -> defer.Deferred[tuple[ConfigRows, SslRows]]:
    """Every ``configs`` row (all tenants) and every ``ssl_configs`` row, from one snapshot."""
    return db.run_interaction(_read_configs)


@defer.inlineCallbacks
def _read_configs(cursor: Cursor) -> Generator[defer.Deferred[Any], Any, tuple[ConfigRows, SslRows]]:
    yield cursor.execute(CONFIG_ROWS)
    rows = cursor.fetchall()
    yield cursor.execute(SSL_ROWS)
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
        " o.memory, o.user_storage_size, o.use_overlay"
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


# -- L7R --------------------------------------------------------------------------------

HOST_COUNTERS = frozenset(
    {"http_requests", "auth_attempts", "auth_ok", "nx_attempts", "nx_ok", "short_sessions"})

# What the L7R reads of one VM (``qvd.l7r.vms.VMRow``).
VM_ROW = (
    "SELECT v.id, v.name, v.user_id, v.osf_id, v.di_tag, r.host_id, r.vm_state, r.vm_cmd,"
    " r.user_state, r.user_cmd, r.l7r_host_id, r.l7r_pid, COALESCE(r.blocked, FALSE),"
    " r.vm_address, r.vm_vma_port, r.vm_x_port"
    " FROM vms v JOIN vm_runtimes r ON r.vm_id = v.id WHERE v.id = %s"
)


def node_status(db: Database, nodename: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(host id, address, state, blocked) of the node named ``nodename``."""
    return db.run_query(
        "SELECT h.id, h.address, r.state, r.blocked FROM hosts h"
        " JOIN host_runtimes r ON r.host_id = h.id WHERE h.name = %s", (nodename,))


def count(db: Database, host_id: int, *counters: str) -> defer.Deferred[None]:
    """``host_counters`` + 1 for each named counter.

    READ COMMITTED: every request bumps the same row, and ``x = x + 1`` is
    safe there, whereas SERIALIZABLE would fail (and retry) under load.
    """
    unknown = set(counters) - HOST_COUNTERS
    if unknown or not counters:
        raise ValueError(f"no host counter {sorted(unknown) or counters!r}")
    assignments = ", ".join(f"{name} = {name} + 1" for name in counters)
    return db.run_interaction(_count, host_id, assignments)


@defer.inlineCallbacks
def _count(cursor: Cursor, host_id: int, assignments: str) -> Generator[defer.Deferred[Any], Any, None]:
    yield cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
    yield cursor.execute(f"UPDATE host_counters SET {assignments} WHERE host_id = %s", (host_id,))


def vms_of_user(
    db: Database, user_id: int, is_application: bool
) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(
        "SELECT v.id, v.name, r.vm_state, COALESCE(r.blocked, FALSE), o.is_application"
        " FROM vms v JOIN vm_runtimes r ON r.vm_id = v.id JOIN osfs o ON o.id = v.osf_id"
        " WHERE v.user_id = %s AND o.is_application = %s ORDER BY v.id",
        (user_id, is_application))


def vm_row(db: Database, vm_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(VM_ROW, (vm_id,))


def set_real_user(db: Database, vm_id: int, user_id: int) -> defer.Deferred[None]:
    return db.run_operation(
        "UPDATE vm_runtimes SET real_user_id = %s WHERE vm_id = %s", (user_id, vm_id))


def request_vm_stop(db: Database, vm_id: int) -> defer.Deferred[Any]:
    """Set ``vm_cmd='stop'`` and notify its host when the VM can stop; the state seen."""
    return db.run_interaction(_request_vm_stop, vm_id)


@defer.inlineCallbacks
def _request_vm_stop(cursor: Cursor, vm_id: int) -> Generator[defer.Deferred[Any], Any, Any]:
    yield cursor.execute(
        "SELECT vm_state, host_id FROM vm_runtimes WHERE vm_id = %s FOR UPDATE", (vm_id,))
    state, host_id = cursor.fetchone()
    if state in ("starting", "running", "debugging") and host_id is not None:
        yield cursor.execute("UPDATE vm_runtimes SET vm_cmd = 'stop' WHERE vm_id = %s", (vm_id,))
        yield cursor.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))
    return state


def acquire_session(
    db: Database, vm_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[Any]:
    """Take the VM's session if nobody holds it; else ask its holder to abort.

    Returns None when acquired, or the holder's (l7r_host_id, l7r_pid).
    """
    return db.run_interaction(_acquire_session, vm_id, host_id, pid, now)


@defer.inlineCallbacks
def _acquire_session(
    cursor: Cursor, vm_id: int, host_id: int, pid: int, now: int
) -> Generator[defer.Deferred[Any], Any, Any]:
    yield cursor.execute(
        "SELECT user_state, l7r_host_id, l7r_pid FROM vm_runtimes WHERE vm_id = %s FOR UPDATE",
        (vm_id,))
    user_state, holder_host, holder_pid = cursor.fetchone()
    if user_state == "disconnected":
        yield cursor.execute(
            "UPDATE vm_runtimes SET user_state = 'connecting', user_state_ts = %s,"
            " l7r_host_id = %s, l7r_pid = %s, user_cmd = NULL WHERE vm_id = %s",
            (now, host_id, pid, vm_id))
        return None
    yield cursor.execute("UPDATE vm_runtimes SET user_cmd = 'abort' WHERE vm_id = %s", (vm_id,))
    if holder_host is not None:
        yield cursor.execute(
            "SELECT pg_notify(%s, '')", (f"qvd_cmd_for_user_on_host{holder_host}",))
    return holder_host, holder_pid


def assign_host(db: Database, vm_id: int, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """Store the chosen host, only if the VM still has none and is stopped."""
    return db.run_query(
        "UPDATE vm_runtimes SET host_id = %s WHERE vm_id = %s AND host_id IS NULL"
        " AND vm_state = 'stopped' RETURNING vm_id", (host_id, vm_id))


def request_vm_start(db: Database, vm_id: int, host_id: int) -> defer.Deferred[Any]:
    return db.run_interaction(_request_vm_start, vm_id, host_id)


@defer.inlineCallbacks
def _request_vm_start(
    cursor: Cursor, vm_id: int, host_id: int
) -> Generator[defer.Deferred[Any], Any, None]:
    yield cursor.execute(
        "UPDATE vm_runtimes SET vm_cmd = 'start' WHERE vm_id = %s AND host_id = %s"
        " AND vm_state = 'stopped' AND vm_cmd IS NULL", (vm_id, host_id))
    yield cursor.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))


def _properties_of(table: str, key: str, owner_sql: str, level: int) -> str:
    return (
        f"SELECT {level} AS level, pl.key, p.value FROM {table} p"
        " JOIN qvd_object_properties_list q ON q.id = p.property_id"
        f" JOIN properties_list pl ON pl.id = q.property_id WHERE p.{key} = ({owner_sql})"
    )


# OSF, then the booted DI, then user, then VM properties: later rows win.
VM_PROPERTIES = " UNION ALL ".join([
    _properties_of("osf_properties", "osf_id", "SELECT osf_id FROM vms WHERE id = %(vm)s", 1),
    _properties_of("di_properties", "di_id",
                   "SELECT current_di_id FROM vm_runtimes WHERE vm_id = %(vm)s", 2),
    _properties_of("user_properties", "user_id", "SELECT user_id FROM vms WHERE id = %(vm)s", 3),
    _properties_of("vm_properties", "vm_id", "SELECT %(vm)s", 4),
]) + " ORDER BY level"


def vm_properties(db: Database, vm_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(level, key, value) rows in precedence order."""
    return db.run_query(VM_PROPERTIES, {"vm": vm_id})


def mark_connected(
    db: Database, vm_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[Any]:
    """``connecting`` → ``connected`` for our session; else why not ('aborted' or the state)."""
    return db.run_interaction(_mark_connected, vm_id, host_id, pid, now)


@defer.inlineCallbacks
def _mark_connected(
    cursor: Cursor, vm_id: int, host_id: int, pid: int, now: int
) -> Generator[defer.Deferred[Any], Any, Any]:
    yield cursor.execute(
        "SELECT user_state, user_cmd, l7r_host_id, l7r_pid FROM vm_runtimes"
        " WHERE vm_id = %s FOR UPDATE", (vm_id,))
    user_state, user_cmd, holder_host, holder_pid = cursor.fetchone()
    if user_cmd == "abort" or (holder_host, holder_pid) != (host_id, pid):
        return "aborted"
    if user_state != "connecting":
        return user_state
    yield cursor.execute(
        "UPDATE vm_runtimes SET user_state = 'connected', user_state_ts = %s WHERE vm_id = %s",
        (now, vm_id))
    return "connected"


def release_session(
    db: Database, vm_id: int, host_id: int, pid: Optional[int], now: int
) -> defer.Deferred[None]:
    """Our session on the VM is over: the row says so, unless another L7R holds it now."""
    return db.run_operation(
        "UPDATE vm_runtimes SET user_state = 'disconnected', user_state_ts = %s,"
        " user_cmd = NULL, l7r_host_id = NULL, l7r_pid = NULL"
        " WHERE vm_id = %s AND l7r_host_id = %s AND l7r_pid IS NOT DISTINCT FROM %s",
        (now, vm_id, host_id, pid))


def sessions_to_abort(db: Database, host_id: int, pid: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    return db.run_query(
        "SELECT vm_id FROM vm_runtimes WHERE l7r_host_id = %s AND l7r_pid = %s"
        " AND user_cmd = 'abort'", (host_id, pid))


def sessions_of_host(db: Database, host_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(vm id, l7r pid) of every session the L7Rs of this host hold."""
    return db.run_query(
        "SELECT vm_id, l7r_pid FROM vm_runtimes WHERE l7r_host_id = %s", (host_id,))


# -- L7R authentication -----------------------------------------------------------------

def tenant_by_name(db: Database, name: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(id, blocked) of the tenant called exactly ``name``."""
    return db.run_query("SELECT id, blocked FROM tenants WHERE name = %s", (name,))


def user_by_login(db: Database, tenant_id: int, login: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(id, blocked, password hash) of a tenant's user."""
    return db.run_query(
        "SELECT id, blocked, password FROM users WHERE tenant_id = %s AND login = %s",
        (tenant_id, login))


def user_with_tenant(db: Database, user_id: int) -> defer.Deferred[list[tuple[Any, ...]]]:
    """(login, blocked, tenant id, tenant name, tenant blocked) of a user."""
    return db.run_query(
        "SELECT u.login, u.blocked, t.id, t.name, t.blocked FROM users u"
        " JOIN tenants t ON t.id = u.tenant_id WHERE u.id = %s", (user_id,))


def use_token(db: Database, token: str, now: int) -> defer.Deferred[Optional[tuple[Any, ...]]]:
    """(user id, vm id, stored auth params) of a valid token; None if unknown or expired.

    Expired tokens are deleted, and so are single-use ones as they are used
    (QVD 4 set their expiration to 0, which comes to the same).
    """
    return db.run_interaction(_use_token, token, now)


@defer.inlineCallbacks
def _use_token(
    cursor: Cursor, token: str, now: int
) -> Generator[defer.Deferred[Any], Any, Optional[tuple[Any, ...]]]:
    yield cursor.execute(
        "SELECT t.user_id, t.vm_id, t.expiration, t.multi_use, p.parameters FROM user_tokens t"
        " LEFT JOIN user_auth_parameters p ON p.id = t.auth_params_id"
        " WHERE t.token = %s FOR UPDATE OF t", (token,))
    row = cursor.fetchone()
    if row is None:
        return None
    user_id, vm_id, expiration, multi_use, parameters = row
    if now > expiration or not multi_use:
        yield cursor.execute("DELETE FROM user_tokens WHERE token = %s", (token,))
    if now > expiration:
        return None
    return user_id, vm_id, parameters


INSERT_AUTH_PARAMS = "INSERT INTO user_auth_parameters (parameters) VALUES (%s) RETURNING id"


def insert_auth_params(db: Database, parameters: str) -> defer.Deferred[list[tuple[Any, ...]]]:
    """A ``user_auth_parameters`` row from JSON text; its id."""
    return db.run_query(INSERT_AUTH_PARAMS, (parameters,))


def insert_token(
    db: Database, token: str, user_id: int, vm_id: Optional[int], expiration: int,
    multi_use: bool, parameters: str,
) -> defer.Deferred[int]:
    """A token and the auth params it carries, in one transaction; the params' id."""
    return db.run_interaction(
        _insert_token, token, user_id, vm_id, expiration, multi_use, parameters)


@defer.inlineCallbacks
def _insert_token(
    cursor: Cursor, token: str, user_id: int, vm_id: Optional[int], expiration: int,
    multi_use: bool, parameters: str,
) -> Generator[defer.Deferred[Any], Any, int]:
    yield cursor.execute(INSERT_AUTH_PARAMS, (parameters,))
    params_id = cursor.fetchone()[0]
    yield cursor.execute(
        "INSERT INTO user_tokens (token, user_id, vm_id, expiration, auth_params_id, multi_use)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (token, user_id, vm_id, expiration, params_id, multi_use))
    return params_id
