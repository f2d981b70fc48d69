"""The audit trail: one ``log`` row per administrative event, never a secret.

QVD 4's API writes a row to the ``log`` table for every login and for every
change made through it; the WAT and ``log_get_list`` read them back.  Any
part of the node that wants an event in that trail (API actions, L7R logins
and connects, ``qa`` changes) builds an ``AuditEntry`` and writes it with
``write`` (inside a caller's transaction), ``record`` (a transaction of its
own), ``write_now`` (a blocking psycopg2 cursor: ``qa``) or an
``AuditQueue`` (batches written off the request path: the L7R's logins and
connects).  ``arguments`` are stored as JSON with every secret, at any depth,
replaced by ``**********``: values under a password or token key, and the
value of a configuration key that names a secret (``auth.ldap.bindpass``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qvd.db.channels import LOG_CREATED

log = Logger()

HIDDEN = "**********"
SECRET_KEYS = frozenset({"password", "passwd", "new_password", "token", "auth_token",
                         "secret", "sid"})
SECRET_CONFIG = re.compile(r"pass|secret|token|salt|\.key$", re.IGNORECASE)

COLUMNS = ("INSERT INTO log (administrator_id, administrator_name, superadmin, tenant_id,"
           " tenant_name, action, type_of_action, qvd_object, object_id, object_name,"
           " arguments, status, source, ip, time) VALUES ")
ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, LOCALTIMESTAMP)"

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
        secret_value = isinstance(value.get("key"), str) and bool(
            SECRET_CONFIG.search(value["key"]))
        return {k: HIDDEN if k in SECRET_KEYS or (k == "value" and secret_value) else scrub(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def write(cursor: Any, entries: Iterable[AuditEntry]) -> defer.Deferred[None]:
    """Insert ``entries`` with ``cursor`` (a txpostgres cursor, in the caller's transaction),
    and announce them on ``LOG_CREATED`` once per tenant, so that live audit lists follow."""
    entries = list(entries)
    d: defer.Deferred[Any] = _insert(cursor, entries) if entries else defer.succeed(None)
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


def write_now(cursor: Any, entries: Iterable[AuditEntry]) -> None:
    """Insert ``entries`` with a blocking psycopg2 ``cursor``, in its transaction."""
    entries = list(entries)
    if entries:
        _insert(cursor, entries)


def _insert(cursor: Any, entries: list[AuditEntry]) -> Any:
    """One INSERT of every row of ``entries`` (at least one), with a txpostgres cursor (a
    Deferred) or a blocking psycopg2 one (None): what ``write``, ``write_now`` and
    ``AuditQueue`` share."""
    params = [value for entry in entries for value in entry.params()]
    return cursor.execute(COLUMNS + ", ".join([ROW] * len(entries)), params)


class AuditQueue(Service):
    """Rows of busy paths, written a batch at a time every ``interval`` seconds.

    A login or a connect must not wait for its audit row, nor fail with it: rows
    wait here and go in one multi-row INSERT.  While QVD-DB is out of reach they
    are kept, up to ``limit`` (the oldest go first, with a warning), and written
    once it is back; stopping writes what is left.
    """

    BATCH = 500

    def __init__(self, database: Any, clock: IReactorTime, interval: float = 0.5,
                 limit: int = 20000):
        self.database = database
        self.clock = clock
        self.interval = interval
        self.limit = limit
        self.pending: list[AuditEntry] = []
        self.dropped = 0
        self._loop: Optional[task.LoopingCall] = None
        self._writing: Optional[defer.Deferred[None]] = None

    def add(self, entry: AuditEntry) -> None:
        self.pending.append(entry)
        if len(self.pending) > self.limit:
            excess = len(self.pending) - self.limit
            del self.pending[:excess]
            self.dropped += excess

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        yield self.flush()
        if self.pending:
            log.warn("{n} audit rows could not be written before stopping", n=len(self.pending))

    def flush(self) -> defer.Deferred[None]:
        """Write what is pending (one write at a time); never fails."""
        if self._writing is not None:
            return self._writing
        if not self.pending and not self.dropped:
            return defer.succeed(None)
        self._writing = self._flush()
        self._writing.addBoth(self._written)
        return self._writing

    def _written(self, _: Any) -> None:
        self._writing = None

    @defer.inlineCallbacks
    def _flush(self) -> Any:
        if self.dropped:
            log.warn("QVD-DB unreachable for long: {n} audit rows dropped", n=self.dropped)
            self.dropped = 0
        while self.pending:
            batch = self.pending[:self.BATCH]
            try:
                yield self.database.run_interaction(_insert, batch)
            except Exception as e:
                log.warn("cannot write {n} audit rows yet: {error}", n=len(self.pending), error=e)
                return
            written = {id(entry) for entry in batch}
            self.pending = [entry for entry in self.pending if id(entry) not in written]
