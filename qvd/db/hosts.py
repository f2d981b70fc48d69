"""The ``hosts``, ``host_runtimes`` and ``host_counters`` tables: nodes, their HKD's
state and heartbeat, the load balancer's view of them, and their counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer

from qvd.db.pool import Database
from qvd.db.rows import READ_COMMITTED, column, each, first

HOST_ID = "SELECT id FROM hosts WHERE name = %s"  # a daemon's start-up, on its blocking connection


@dataclass(frozen=True)
class HostStatus:
    """This node as the L7R checks it before serving a request."""

    id: int
    address: str
    state: str
    blocked: bool
    heartbeat_age: Optional[float]  # seconds since its HKD's last heartbeat; None: never


NODE_STATUS = (
    "SELECT h.id, h.address, r.state, r.blocked, EXTRACT(EPOCH FROM now() - r.ok_ts)::float"
    " FROM hosts h JOIN host_runtimes r ON r.host_id = h.id WHERE h.name = %(name)s"
)


def node_status(db: Database, nodename: str,
                counted: bool = False) -> defer.Deferred[Optional[HostStatus]]:
    """This node; with ``counted``, one more ``http_requests`` in the same statement."""
    if not counted:
        return db.run_read(NODE_STATUS, {"name": nodename}).addCallback(first(HostStatus))
    return db.run_query(
        READ_COMMITTED + "WITH counted AS (UPDATE host_counters c"
        " SET http_requests = http_requests + 1 FROM hosts h"
        " WHERE h.name = %(name)s AND c.host_id = h.id) " + NODE_STATUS,
        {"name": nodename}).addCallback(first(HostStatus))


def set_host_state(db: Database, host_id: int, state: str) -> defer.Deferred[bool]:
    """False if the host has no runtime row."""
    return db.run_query(
        "UPDATE host_runtimes SET state = %s WHERE host_id = %s RETURNING host_id",
        (state, host_id)).addCallback(bool)


def heartbeat(
    db: Database, host_id: int, pid: int, free_ram: float, free_cpu: float
) -> defer.Deferred[bool]:
    """One tick; False means the host was marked ``lost`` (or deleted)."""
    return db.run_query(
        "UPDATE host_runtimes SET ok_ts = now(), pid = %s, usable_ram = %s, usable_cpu = %s"
        " WHERE host_id = %s AND state <> 'lost' RETURNING host_id",
        (pid, free_ram, free_cpu, host_id)).addCallback(bool)


def take_host_cmd(db: Database, host_id: int) -> defer.Deferred[list[str]]:
    """The pending host command (none or one), consumed atomically."""
    return db.run_query(
        "UPDATE host_runtimes h SET cmd = NULL FROM"
        " (SELECT host_id, cmd FROM host_runtimes WHERE host_id = %s AND cmd IS NOT NULL"
        " FOR UPDATE) o WHERE h.host_id = o.host_id RETURNING o.cmd",
        (host_id,)).addCallback(column)


# -- the load balancer's view ---------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One host as the load balancer sees it (a row of ``LB_CANDIDATES``)."""

    host_id: int
    name: str
    backend: bool
    blocked: bool
    state: str
    heartbeat_age: Optional[float]  # seconds since ok_ts, by the database clock
    free_ram: float  # MB, refreshed by the host's heartbeat
    free_cpu: float  # bogomips-like units, refreshed by the host's heartbeat
    vms: int  # VMs assigned to the host, any state


# Every host with what the load balancer needs; ``qa`` runs it on its blocking connection.
LB_CANDIDATES = (
    "SELECT h.id, h.name, h.backend, r.blocked, r.state,"
    " EXTRACT(EPOCH FROM now() - r.ok_ts)::float, COALESCE(r.usable_ram, 0)::float,"
    " COALESCE(r.usable_cpu, 0)::float,"
    " (SELECT count(*) FROM vm_runtimes v WHERE v.host_id = h.id)::int"
    " FROM hosts h JOIN host_runtimes r ON r.host_id = h.id ORDER BY h.id"
)
candidates = each(Candidate)  # LB_CANDIDATES rows as Candidates


def lb_candidates(db: Database) -> defer.Deferred[list[Candidate]]:
    return db.run_read(LB_CANDIDATES).addCallback(candidates)


# -- counters -------------------------------------------------------------------------

HOST_COUNTERS = frozenset(
    {"http_requests", "auth_attempts", "auth_ok", "nx_attempts", "nx_ok", "short_sessions"})


def count(db: Database, host_id: int, *counters: str) -> defer.Deferred[None]:
    """``host_counters`` + 1 for each named counter.

    READ COMMITTED: every request bumps the same row, and ``x = x + 1`` is
    safe there, whereas SERIALIZABLE would fail (and retry) under load.
    """
    return db.run_operation(READ_COMMITTED + counting(*counters), {"host": host_id})


def counting(*counters: str) -> str:
    """The UPDATE adding one to each named counter of host ``%(host)s`` (also a CTE of
    the statements that count as they go)."""
    unknown = set(counters) - HOST_COUNTERS
    if unknown or not counters:
        raise ValueError(f"no host counter {sorted(unknown) or counters!r}")
    assignments = ", ".join(f"{name} = {name} + 1" for name in counters)
    return f"UPDATE host_counters SET {assignments} WHERE host_id = %(host)s"
