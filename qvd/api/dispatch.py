"""The ``/api`` pipeline: authenticate, audit the login, check the action's
ACL, run it, and shape the answer (QVD 4's REST.pm, reference §1.3–§1.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

import psycopg2
from twisted.internet import defer
from twisted.logger import Logger

from qvd import audit
from qvd.api.acls import AclCache, Permissions
from qvd.api.call import Action, Call
from qvd.api.errors import APIError
from qvd.api.query import Scope
from qvd.api.sessions import LoginFailed, Sessions
from qvd.audit import AuditEntry
from qvd.config import Config
from qvd.db import DatabaseError
from qvd.db.administrators import Administrator
from qvd.db.pool import Database

log = Logger()

LOG_READS_KEY = "api.log.reads"
ACL_OBJECTS = ("role", "administrator")  # a change to these may change who may do what


@dataclass
class Answer:
    """The body to send, and the session to set as a cookie (on login)."""

    body: dict[str, Any]
    sid: Optional[str] = None


def login_entry(status: int, peer: str, source: Optional[str],
                admin: Optional[Administrator], name: Any = None) -> AuditEntry:
    return AuditEntry(
        action="login", type_of_action="login", qvd_object="administrator", status=status,
        administrator_id=admin.id if admin else None,
        administrator_name=admin.name if admin else (name if isinstance(name, str) else None),
        superadmin=admin.superadmin if admin else None,
        tenant_id=admin.tenant_id if admin else None,
        tenant_name=admin.tenant_name if admin else None,
        object_id=admin.id if admin else None, object_name=admin.name if admin else None,
        source=source, ip=peer)


def _source(params: dict[str, Any]) -> Optional[str]:
    parameters = params.get("parameters")
    value = parameters.get("source") if isinstance(parameters, dict) else None
    return value if isinstance(value, str) else None


class API:
    """Everything an API process shares: configuration, database, sessions, ACLs."""

    def __init__(self, config: Config, database: Database, clock: Any):
        self.config = config
        self.database = database
        self.clock = clock
        self.sessions = Sessions(config, database, clock)
        self.acls = AclCache(database)
        from qvd.api.actions import ACTIONS
        self.actions: dict[str, Action] = ACTIONS

    # -- authentication ------------------------------------------------------------

    @defer.inlineCallbacks
    def authenticate(self, params: dict[str, Any], peer: str,
                     cookie_sid: Optional[str]) -> Generator[Any, Any, tuple[Administrator, Optional[str]]]:
        """(administrator, new sid or None); every attempt leaves a login row."""
        source = _source(params)
        try:
            if params.get("login") is not None and params.get("password") is not None:
                admin, sid = yield self.sessions.login(params["login"], params["password"],
                                                      params.get("tenant"), peer)
            else:
                sid_given = params.get("sid") or cookie_sid
                admin, sid = (yield self.sessions.resume(sid_given, peer)), None
        except LoginFailed as e:
            yield self._audit([login_entry(e.code, peer, source, e.admin, params.get("login"))])
            raise
        if sid is not None:  # a login, not a request in a session (QVD 4 logged both)
            yield self._audit([login_entry(0, peer, source, admin)])
        return admin, sid

    def _audit(self, entries: list[AuditEntry]) -> defer.Deferred[None]:
        def failed(failure: Any) -> None:
            log.warn("cannot write the audit log: {error}", error=failure.getErrorMessage())
        return audit.record(self.database, entries).addErrback(failed)

    # -- one /api request ----------------------------------------------------------

    @defer.inlineCallbacks
    def process(self, params: dict[str, Any], peer: str,
                cookie_sid: Optional[str]) -> Generator[Any, Any, Answer]:
        try:
            admin, sid = yield self.authenticate(params, peer, cookie_sid)
            call = yield self.prepare(params, admin, peer)
            body = yield self.run(call)
        except APIError as e:
            return Answer(e.body())
        except (DatabaseError, psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            log.warn("database unavailable: {error}", error=str(e).splitlines()[0] if str(e) else e)
            return Answer(APIError(2100).body())
        if call.action.name == "current_admin_setup":
            body["sid"] = sid or params.get("sid") or cookie_sid
        return Answer(body, sid)

    @defer.inlineCallbacks
    def prepare(self, params: dict[str, Any], admin: Administrator,
                peer: str) -> Generator[Any, Any, Call]:
        name = params.get("action")
        if not isinstance(name, str) or not name:
            raise APIError(4110)
        action = self.actions.get(name)
        if action is None:
            raise APIError(4100, name)
        multitenant = self.sessions.multitenant()
        permissions = yield self.acls.permissions(admin, multitenant)
        if not allowed(action, admin, permissions):
            raise APIError(4210, name)
        scope = Scope(admin, permissions, multitenant, self.config)
        return Call(self, action, admin, permissions, params, peer, scope)

    @defer.inlineCallbacks
    def run(self, call: Call) -> Generator[Any, Any, dict[str, Any]]:
        """Run the action; a refused request is audited unless it only read."""
        action = call.action
        try:
            body = yield action.handler(call)
        except APIError as e:
            if not action.reads or self.config.get_bool(LOG_READS_KEY, default=False):
                if not getattr(e, "audited", False):
                    yield self._audit([call.entry(e.code)])
            raise
        except psycopg2.Error as e:
            error = db_error(e, action.type)
            if not action.reads:
                yield self._audit([call.entry(error.code)])
            raise error from None
        finally:
            if not action.reads and action.qvd_object in ACL_OBJECTS:
                self.acls.clear()  # before we answer; other API processes on the NOTIFY
        if action.reads and self.config.get_bool(LOG_READS_KEY, default=False):
            yield self._audit([call.entry(0)])
        return body


def allowed(action: Action, admin: Administrator, permissions: Permissions) -> bool:
    """Whether ``admin`` may call ``action`` at all (its ACL patterns, superadmins only)."""
    return permissions.allows(action.acls) and (admin.superadmin or not action.superadmin_only)


def db_error(error: psycopg2.Error, type_of_action: str, kind: str = "") -> APIError:
    """QVD 4's mapping of database errors by class and kind of query (§1.4)."""
    code = error.pgcode or ""
    detail = (error.diag.message_primary or str(error)).strip().splitlines()[0] if error else ""
    changing = type_of_action in ("create", "update", "create_or_update")
    if code.startswith("22"):  # data exception
        table = {"properties": 6340, "tags": 6350, "acls": 6360, "roles": 6370}
        number = table.get(kind) or (6320 if type_of_action == "list" else
                                     6330 if changing else 6310)
        return APIError(number, info=detail)
    if code == "23502":
        return APIError({"tags": 6430, "acls": 6440, "roles": 6450}.get(kind, 6410), info=detail)
    if code == "23503":
        return APIError(7110 if changing else 7120 if type_of_action == "delete" else 7100,
                        info=detail)
    if code == "23505":
        return APIError({"properties": 7210, "acls": 7220, "roles": 7230}.get(kind, 7200),
                        info=detail)
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return APIError(2100, info=detail)
    return APIError(1100, info=detail)
