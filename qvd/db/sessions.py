"""The user side of ``vm_runtimes``: which L7R process holds a VM's session.

A session row names its holder by (``l7r_host_id``, ``l7r_pid``); a contending
client marks it ``abort`` and the holder's node hears it on its user channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.db.pool import Database
from qvd.db.rows import column, each
from qvd.db.vms import ABORT_SESSION

# What a session's end writes (its holder gone, however it went).
SESSION_GONE = ("user_state = 'disconnected', user_state_ts = %(now)s, user_cmd = NULL,"
                " l7r_host_id = NULL, l7r_pid = NULL")


@dataclass(frozen=True)
class Holder:
    """The L7R process holding a VM's session."""

    host_id: Optional[int]
    pid: Optional[int]


def acquire_session(
    db: Database, vm_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[Optional[Holder]]:
    """Take the VM's session if nobody holds it (None); else ask its holder to abort
    and return that holder."""
    return db.run_interaction(_acquire_session, vm_id, host_id, pid, now)


@defer.inlineCallbacks
def _acquire_session(
    cursor: Cursor, vm_id: int, host_id: int, pid: int, now: int
) -> Generator[defer.Deferred[Any], Any, Optional[Holder]]:
    yield cursor.execute(
        "SELECT user_state, l7r_host_id, l7r_pid FROM vm_runtimes WHERE vm_id = %s FOR UPDATE",
        (vm_id,))
    user_state, *holder = cursor.fetchone()
    if user_state == "disconnected":
        yield cursor.execute(
            "UPDATE vm_runtimes SET user_state = 'connecting', user_state_ts = %s,"
            " l7r_host_id = %s, l7r_pid = %s, user_cmd = NULL WHERE vm_id = %s",
            (now, host_id, pid, vm_id))
        return None
    yield cursor.execute(ABORT_SESSION, {"vm": vm_id})
    return Holder(*holder)


def mark_connected(
    db: Database, vm_id: int, host_id: int, pid: int, now: int
) -> defer.Deferred[str]:
    """``connecting`` → ``connected`` for our session; else why not ('aborted' or the state)."""
    return db.run_interaction(_mark_connected, vm_id, host_id, pid, now)


@defer.inlineCallbacks
def _mark_connected(
    cursor: Cursor, vm_id: int, host_id: int, pid: int, now: int
) -> Generator[defer.Deferred[Any], Any, str]:
    yield cursor.execute(
        "SELECT user_state, user_cmd, l7r_host_id, l7r_pid FROM vm_runtimes"
        " WHERE vm_id = %s FOR UPDATE", (vm_id,))
    user_state, user_cmd, *holder = cursor.fetchone()
    if user_cmd == "abort" or Holder(*holder) != Holder(host_id, pid):
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
        f"UPDATE vm_runtimes SET {SESSION_GONE} WHERE vm_id = %(vm)s"
        " AND l7r_host_id = %(host)s AND l7r_pid IS NOT DISTINCT FROM %(pid)s",
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
