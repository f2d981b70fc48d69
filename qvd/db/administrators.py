"""Administrators and API sessions in QVD-DB, as small rows next to their SQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from twisted.internet import defer

from qvd.db.pool import Database

SUPERTENANT = 0
RECOVERY_ADMIN = 0


@dataclass(frozen=True)
class Administrator:
    """Who is calling the API; superadmins belong to tenant 0 (``*``)."""

    id: int
    name: str
    tenant_id: int
    tenant_name: str
    tenant_blocked: bool = False
    password: Optional[str] = None
    language: str = "auto"
    block: int = 10

    @property
    def superadmin(self) -> bool:
        return self.tenant_id == SUPERTENANT

    @property
    def recovery(self) -> bool:
        return self.id == RECOVERY_ADMIN


_ADMIN = (
    "SELECT a.id, a.name, a.tenant_id, t.name, COALESCE(t.blocked, FALSE), a.password,"
    " COALESCE(CAST(ws.language AS text), 'auto'), COALESCE(ws.block, 10)"
    " FROM administrators a JOIN tenants t ON t.id = a.tenant_id"
    " LEFT JOIN wat_setups_by_administrators ws ON ws.administrator_id = a.id"
)


def _admin(row: tuple[Any, ...]) -> Administrator:
    return Administrator(*row)


def admins_named(db: Database, name: str, tenant: Optional[str]) -> defer.Deferred[list[Administrator]]:
    """Administrators called exactly ``name`` (in the tenant named ``tenant`` if given)."""
    if tenant is None:
        d = db.run_read(_ADMIN + " WHERE a.name = %s ORDER BY a.id", (name,))
    else:
        d = db.run_read(_ADMIN + " WHERE a.name = %s AND t.name = %s ORDER BY a.id",
                         (name, tenant))
    return d.addCallback(lambda rows: [_admin(r) for r in rows])


def admin_by_id(db: Database, admin_id: int) -> defer.Deferred[Optional[Administrator]]:
    d = db.run_read(_ADMIN + " WHERE a.id = %s", (admin_id,))
    return d.addCallback(lambda rows: _admin(rows[0]) if rows else None)


@dataclass(frozen=True)
class Session:
    """A row of ``session``: the administrator it belongs to, the address it was
    opened from (it works from there only) and when it expires (epoch seconds)."""

    sid: str
    admin_id: int
    ip: Optional[str]
    expires: int

    def data(self) -> str:
        return json.dumps({"admin_id": self.admin_id, "ip": self.ip})


def create_session(db: Database, session: Session) -> defer.Deferred[None]:
    return db.run_operation("INSERT INTO session (sid, data, expires) VALUES (%s, %s, %s)",
                            (session.sid, session.data(), session.expires))


def find_session(db: Database, sid: str) -> defer.Deferred[Optional[tuple[Session, Optional[Administrator]]]]:
    """The session and (in the same statement) its administrator, if it still exists."""
    def row(rows: list[tuple[Any, ...]]) -> Optional[tuple[Session, Optional[Administrator]]]:
        if not rows:
            return None
        try:
            data = json.loads(rows[0][0] or "{}")
            session = Session(sid, int(data["admin_id"]), data.get("ip"), rows[0][1])
        except (ValueError, KeyError, TypeError):
            return None  # not one of ours (e.g. written by QVD 4's API): log in again
        admin = _admin(rows[0][2:]) if rows[0][2] is not None and \
            rows[0][2] == session.admin_id else None
        return session, admin

    return db.run_read(
        "SELECT s.data, s.expires, x.* FROM session s LEFT JOIN LATERAL (" + _ADMIN +
        " WHERE s.data LIKE '{%%' AND a.id = CAST(s.data::json ->> 'admin_id' AS integer)) x ON TRUE"
        " WHERE s.sid = %s", (sid,)).addCallback(row)


def extend_session(db: Database, sid: str, expires: int) -> defer.Deferred[None]:
    return db.run_operation("UPDATE session SET expires = %s WHERE sid = %s", (expires, sid))


def delete_session(db: Database, sid: str) -> defer.Deferred[None]:
    return db.run_operation("DELETE FROM session WHERE sid = %s", (sid,))


def delete_expired_sessions(db: Database, now: int) -> defer.Deferred[None]:
    return db.run_operation("DELETE FROM session WHERE expires < %s", (now,))


def operative_acl_names(db: Database, admin_id: int, closed: str, opened: str,
                        hidden: str) -> defer.Deferred[frozenset[str]]:
    """The names of the ACLs an administrator holds through its roles, with the
    overrides applied: ``closed`` never, ``opened`` always, ``hidden`` neither."""
    sql = (
        "SELECT ac.name FROM acls ac WHERE ac.name !~ %s AND (ac.name ~ %s OR (ac.name !~ %s"
        " AND EXISTS (SELECT 1 FROM role_administrator_relations ra JOIN all_acl_role_relations x"
        " ON x.inheritor_id = ra.role_id WHERE ra.administrator_id = %s AND x.acl_id = ac.id)))"
    )
    d = db.run_read(sql, (hidden, opened, closed, admin_id))
    return d.addCallback(lambda rows: frozenset(r[0] for r in rows))
