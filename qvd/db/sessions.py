"""The user side of ``vm_runtimes``: which L7R process holds a VM's session.

A session row names its holder by (``l7r_host_id``, ``l7r_pid``); a contending
client marks it ``abort`` and the holder's node hears it on its user channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import defer

from qvd.db import channels, hosts, tokens
from qvd.db.pool import Database
from qvd.db.rows import READ_COMMITTED, column, each
from qvd.db.vms import VMRow

# What a session's end writes (its holder gone, however it went).
SESSION_GONE = ("user_state = 'disconnected', user_state_ts = %(now)s, user_cmd = NULL,"
                " l7r_host_id = NULL, l7r_pid = NULL")


@dataclass(frozen=True)
class Holder:
    """The L7R process holding a VM's session."""

    host_id: Optional[int]
    pid: Optional[int]


@dataclass(frozen=True)
class Claim:
    """What ``acquire_session`` did: ``holder`` is the L7R process asked to end its
    session (None: the session is ours now); ``vm`` is the VM as the claim left it."""

    holder: Optional[Holder]
    vm: VMRow


# One statement (READ COMMITTED: the row lock orders contending clients, each of which
# then sees the row as the one before it left it): the VM's real user is set; a
# ``disconnected`` session becomes ours, ``connecting``; one held by someone else is
# asked to abort and its holder's node told, as ``vms.ABORT_SESSION`` does.
ACQUIRE = READ_COMMITTED + (
    "WITH claimed AS (UPDATE vm_runtimes r SET real_user_id = %(user)s,"
    " user_state = CASE WHEN o.free THEN 'connecting' ELSE r.user_state END,"
    " user_state_ts = CASE WHEN o.free THEN %(now)s ELSE r.user_state_ts END,"
    " l7r_host_id = CASE WHEN o.free THEN %(host)s ELSE r.l7r_host_id END,"
    " l7r_pid = CASE WHEN o.free THEN %(pid)s ELSE r.l7r_pid END,"
    " user_cmd = CASE WHEN o.free THEN NULL ELSE 'abort' END"
    " FROM (SELECT vm_id, user_state = 'disconnected' AS free, l7r_host_id, l7r_pid"
    " FROM vm_runtimes WHERE vm_id = %(vm)s FOR UPDATE) o WHERE r.vm_id = o.vm_id"
    " RETURNING o.free, o.l7r_host_id AS held_on, o.l7r_pid AS held_by, r.*),"
    " told AS (SELECT pg_notify(" + f"'{channels.USER_COMMANDS}'" + " || held_on, '')"
    " FROM claimed WHERE NOT free AND held_on IS NOT NULL)"
    " SELECT c.free, c.held_on, c.held_by, v.id, v.name, v.user_id, v.osf_id, v.di_tag,"
    " c.host_id, c.vm_state, c.vm_cmd, c.user_state, c.user_cmd, c.l7r_host_id, c.l7r_pid,"
    " COALESCE(c.blocked, FALSE), c.vm_address, c.vm_vma_port, c.vm_x_port,"
    " (SELECT count(*) FROM told) FROM claimed c JOIN vms v ON v.id = c.vm_id"
)


def acquire_session(
    db: Database, vm_id: int, user_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[Optional[Claim]]:
    """For ``user_id``, take the VM's session if nobody holds it, else ask its holder to
    abort; None if the VM is gone."""
    return db.run_query(ACQUIRE, {"vm": vm_id, "user": user_id, "host": host_id, "pid": pid,
                                  "now": now}).addCallback(_claim)


def _claim(rows: list[tuple[Any, ...]]) -> Optional[Claim]:
    if not rows:
        return None
    free, held_on, held_by, *vm, _ = rows[0]
    return Claim(None if free else Holder(held_on, held_by), VMRow(*vm))


# ``connecting`` -> ``connected`` if the session is still ours and not aborted, with the
# NX port counted as attempted and reached; else why not ('aborted' or the state).
MARK_CONNECTED = READ_COMMITTED + (
    "WITH o AS (SELECT user_state, user_cmd, l7r_host_id, l7r_pid FROM vm_runtimes"
    " WHERE vm_id = %(vm)s FOR UPDATE),"
    " mine AS (SELECT user_cmd IS DISTINCT FROM 'abort' AND l7r_host_id = %(host)s"
    " AND l7r_pid = %(pid)s AS ours, user_state FROM o),"
    " marked AS (UPDATE vm_runtimes r SET user_state = 'connected', user_state_ts = %(now)s"
    " FROM mine WHERE r.vm_id = %(vm)s AND mine.ours AND mine.user_state = 'connecting'"
    " RETURNING 1),"
    f" counted AS ({hosts.counting('nx_attempts', 'nx_ok')})"
    " SELECT CASE WHEN EXISTS (SELECT 1 FROM marked) THEN 'connected'"
    " WHEN NOT COALESCE(ours, FALSE) THEN 'aborted' ELSE user_state END FROM mine"
)


def mark_connected(
    db: Database, vm_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[str]:
    """``connecting`` → ``connected`` for our session (after the NX port answered);
    else why not ('aborted' or the state)."""
    return db.run_query(MARK_CONNECTED, {"vm": vm_id, "host": host_id, "pid": pid,
                                         "now": now}).addCallback(lambda rows: rows[0][0])


def end_session(db: Database, vm_id: int, host_id: int, pid: int, now: int,
                token: Optional[str], short: bool) -> defer.Deferred[None]:
    """A session of ours is over, in one statement: its row says so (unless another L7R
    holds it now), the token its VMA got is gone, and a short one is counted."""
    parts = [f"released AS ({RELEASE})"]
    if token is not None:
        parts.append(tokens.TOKENS_GONE.format(where="token = %(token)s"))
    if short:
        parts.append(f"counted AS ({hosts.counting('short_sessions')})")
    return db.run_operation(
        READ_COMMITTED + "WITH " + ", ".join(parts) + " SELECT 1",
        {"now": now, "vm": vm_id, "host": host_id, "pid": pid, "token": token})


RELEASE = (f"UPDATE vm_runtimes SET {SESSION_GONE} WHERE vm_id = %(vm)s"
           " AND l7r_host_id = %(host)s AND l7r_pid IS NOT DISTINCT FROM %(pid)s")


def release_session(
    db: Database, vm_id: int, host_id: int, pid: Optional[int], now: int
) -> defer.Deferred[None]:
    """A session on the VM is over: the row says so, unless another L7R holds it now."""
    return db.run_operation(READ_COMMITTED + RELEASE,
                            {"now": now, "vm": vm_id, "host": host_id, "pid": pid})


def sessions_to_abort(db: Database, host_id: int, pid: int) -> defer.Deferred[list[int]]:
    """The VMs whose session this process holds and was asked to end."""
    return db.run_read(
        "SELECT vm_id FROM vm_runtimes WHERE l7r_host_id = %s AND l7r_pid = %s"
        " AND user_cmd = 'abort'", (host_id, pid)).addCallback(column)


@dataclass(frozen=True)
class HeldSession:
    vm_id: int
    pid: Optional[int]  # the L7R process of this host holding it


def sessions_of_host(db: Database, host_id: int) -> defer.Deferred[list[HeldSession]]:
    """Every session the L7Rs of this host hold."""
    return db.run_read(
        "SELECT vm_id, l7r_pid FROM vm_runtimes WHERE l7r_host_id = %s",
        (host_id,)).addCallback(each(HeldSession))
