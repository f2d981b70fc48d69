"""The audit trail: one ``log`` row per administrative event, never a secret.

QVD 4's API writes a row to the ``log`` table for every login and for every
change made through it; the WAT and ``log_get_list`` read them back.  Any
part of the node that wants an event in that trail (API actions, L7R logins
and connects, ``qa`` changes) builds an ``AuditEntry`` and writes it with
``write`` (inside a caller's transaction) or ``record`` (a transaction of
its own).  ``arguments`` are stored as JSON with every ``password`` value,
at any depth, replaced by ``**********``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from twisted.internet import defer

from qvd.db.channels import LOG_CREATED

HIDDEN = "**********"
SECRET_KEYS = frozenset({"password", "passwd", "new_password"})

INSERT = (
    "INSERT INTO log (administrator_id, administrator_name, superadmin, tenant_id, tenant_name,"
    " action, type_of_action, qvd_object, object_id, object_name, arguments, status, source,"
    " ip, time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, LOCALTIMESTAMP)"
)

ANNOUNCE = "SELECT pg_notify(%s, %s)"


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which object, and how it ended (0 or an API status code)."""

    action: str
    type_of_action: str
    qvd_object: str
    status: int
    administrator_id: Optional[int] = None
    administrator_name: Optional[str] = None
    superadmin: Optional[bool] = None
    tenant_id: Optional[int] = None
    tenant_name: Optional[str] = None
    object_id: Optional[int] = None
    object_name: Optional[str] = None
    arguments: Any = field(default=None)
    source: Optional[str] = None
    ip: Optional[str] = None

    def params(self) -> tuple[Any, ...]:
        arguments = None if self.arguments is None else json.dumps(
            scrub(self.arguments), ensure_ascii=False, sort_keys=True)
        return (self.administrator_id, _cut(self.administrator_name), self.superadmin,
                self.tenant_id, _cut(self.tenant_name), self.action, self.type_of_action,
                self.qvd_object, self.object_id, _cut(self.object_name), arguments,
                self.status, _cut(self.source), _cut(self.ip))


def _cut(text: Optional[str]) -> Optional[str]:
    """The log's name columns are varchar(80)."""
    return None if text is None else str(text)[:80]


def scrub(value: Any) -> Any:
    """``value`` with every secret replaced, at any depth."""
    if isinstance(value, dict):
        return {k: HIDDEN if k in SECRET_KEYS else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def write(cursor: Any, entries: Iterable[AuditEntry]) -> defer.Deferred[None]:
    """Insert ``entries`` with ``cursor`` (a txpostgres cursor, in the caller's transaction),
    and announce them on ``LOG_CREATED`` once per tenant, so that live audit lists follow."""
    entries = list(entries)
    d: defer.Deferred[Any] = defer.succeed(None)
    for entry in entries:
        d.addCallback(lambda _, e=entry: cursor.execute(INSERT, e.params()))
    for tenant_id in {entry.tenant_id for entry in entries}:
        payload = "" if tenant_id is None else f"tenant_id={tenant_id}"
        d.addCallback(lambda _, p=payload: cursor.execute(ANNOUNCE, (LOG_CREATED, p)))
    return d.addCallback(lambda _: None)


def record(database: Any, entries: Iterable[AuditEntry]) -> defer.Deferred[None]:
    """Insert ``entries`` in a transaction of their own (``qvd.db.pool.Database``)."""
    entries = list(entries)
    if not entries:
        return defer.succeed(None)
    return database.run_interaction(write, entries)
