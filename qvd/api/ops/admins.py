"""Administrators, roles and ACLs: who may do what (reference §2.3, §4.2).

Every change that can alter someone's effective ACLs also sends NOTIFY on
``qvd.api.acls.CHANNEL`` (in the same transaction), so every API process
drops its cached permissions once the change is committed.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer

from qvd.api.acls import CHANNEL, overrides
from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.model import ACLS_IN_ADMIN, ACLS_IN_ROLE, ADMINISTRATOR, ROLE
from qvd.api.ops.changes import (
    Arg, Column, Spec, Target, convert, create_handler, delete_handler, insert_row,
    update_handler,
)
from qvd.api.ops.listing import fetch, one_value, without
from qvd.db.administrators import admin_by_id


def announce(cursor: Any) -> defer.Deferred[Any]:
    return cursor.execute(f"SELECT pg_notify('{CHANNEL}', '')")


# -- resolving ids or names -------------------------------------------------------------


@defer.inlineCallbacks
def _ids(cursor: Any, table: str, values: Any, code: int, name: str,
         tenants: Optional[list[int]] = None) -> Generator[Any, Any, list[int]]:
    """Ids of ACLs or roles given all by id or all by name (mixing: ``code``)."""
    if isinstance(values, (str, int)):
        values = [values]
    if not isinstance(values, list) or not values:
        raise APIError(code, name)
    numeric = [isinstance(v, int) or (isinstance(v, str) and v.isdigit()) for v in values]
    if any(numeric) and not all(numeric):
        raise APIError(code, name)
    column = "id" if all(numeric) else "name"
    params: list[Any] = [[int(v) for v in values] if column == "id" else [str(v) for v in values]]
    scope = ""
    if tenants is not None:
        scope = " AND tenant_id = ANY(%s)"
        params.append(tenants)
    yield cursor.execute(f"SELECT id, {column} FROM {table} WHERE {column} = ANY(%s){scope}",
                         params)
    found = cursor.fetchall()
    if len({r[1] for r in found}) != len(set(params[0])):
        raise APIError(code, name)
    return [r[0] for r in found]


def _role_tenants(call: Call) -> Optional[list[int]]:
    return None if call.admin.superadmin else [call.admin.tenant_id, -1]


# -- administrators ----------------------------------------------------------------------

ADMIN_SPEC = Spec(
    model=ADMINISTRATOR,
    update={"name": Arg("administrators", "id", "name", "name"),
            "password": Arg("administrators", "id", "password", "password"),
            "description": Arg("administrators", "id", "description"),
            "language": Arg("wat_setups_by_administrators", "administrator_id", "language",
                            "language"),
            "block": Arg("wat_setups_by_administrators", "administrator_id", "block", "block")},
    mandatory=("tenant_id", "name", "password", "language", "block"),
    optional=("description",),
    defaults={"language": "auto", "block": "10"},
    create_acls={"__roles__": r"^administrator\.update\.assign-role$"},
    nested_acls={"__roles_changes__assign_roles": r"^administrator\.update\.assign-role$",
                 "__roles_changes__unassign_roles": r"^administrator\.update\.assign-role$"},
    create_nested=("__roles__",),
    update_nested=("__roles_changes__assign_roles", "__roles_changes__unassign_roles"),
    tenant_owned=True,
)


# (role_id, administrator_id) given or taken away
_ADMIN_ROLE_CHANGE = {
    True: "INSERT INTO role_administrator_relations (role_id, administrator_id)"
          " VALUES (%s, %s) ON CONFLICT DO NOTHING",
    False: "DELETE FROM role_administrator_relations WHERE role_id = %s"
           " AND administrator_id = %s",
}


@defer.inlineCallbacks
def _assign_roles(call: Call, cursor: Any, admin_id: int, values: Any,
                  assign: bool) -> Generator[Any, Any, None]:
    role_ids = yield _ids(cursor, "roles", values, 6370, "roles", _role_tenants(call))
    for role_id in role_ids:
        yield cursor.execute(_ADMIN_ROLE_CHANGE[assign], (role_id, admin_id))
    yield announce(cursor)


ADMIN_COLUMNS = (Column("name", "name", "name"), Column("password", "password", "password"),
                 Column("description", "description"))


@defer.inlineCallbacks
def _insert_admin(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = convert(call, "tenant_id", values["tenant_id"], "int")
    if tenant_id == -1:
        raise APIError(7110, "tenant_id")
    admin_id = yield insert_row(call, cursor, "administrators", values, ADMIN_COLUMNS,
                                given={"tenant_id": tenant_id})
    yield cursor.execute(
        "INSERT INTO wat_setups_by_administrators (administrator_id, language, block)"
        " VALUES (%s, %s, %s)", (admin_id, convert(call, "language", values["language"], "language"),
                                 convert(call, "block", values["block"], "block")))
    for name, value in items:
        if name == "__roles__":
            yield _assign_roles(call, cursor, admin_id, value, True)
    return admin_id


administrator_create = create_handler(ADMIN_SPEC, _insert_admin)


@defer.inlineCallbacks
def _admin_roles(call: Call, cursor: Any, target: Target, items: list) -> Generator[Any, Any, None]:
    for name, value in items:
        if name in ("__roles_changes__assign_roles", "__roles_changes__unassign_roles"):
            yield _assign_roles(call, cursor, target.id, value, name.endswith("__assign_roles"))


def _wat_setup(call: Call, cursor: Any, target: Target) -> defer.Deferred[Any]:
    return cursor.execute("INSERT INTO wat_setups_by_administrators (administrator_id)"
                          " VALUES (%s) ON CONFLICT (administrator_id) DO NOTHING", (target.id,))


administrator_update = update_handler(ADMIN_SPEC, check=_wat_setup, after=_admin_roles)


@defer.inlineCallbacks
def _not_myself(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    if target.id == call.admin.id or target.name == call.admin.name and \
            target.tenant_id == call.admin.tenant_id:
        raise APIError(5200)
    yield announce(cursor)


administrator_delete = delete_handler(ADMINISTRATOR, check=_not_myself)

MYADMIN_SPEC = Spec(model=ADMINISTRATOR, update={k: v for k, v in ADMIN_SPEC.update.items()})


def myadmin_update(call: Call) -> defer.Deferred[dict]:
    """Any administrator may change its own name, password, language and block."""
    call.params["filters"] = {"id": call.admin.id}
    return update_handler(MYADMIN_SPEC, check=_wat_setup)(call)


# -- roles -------------------------------------------------------------------------------

ROLE_SPEC = Spec(
    model=ROLE,
    update={"name": Arg("roles", "id", "name"),
            "description": Arg("roles", "id", "description")},
    mandatory=("tenant_id", "name", "fixed", "internal"),
    optional=("description",),
    defaults={"fixed": "0", "internal": "0"},
    create_acls={"__acls__": r"^role\.update\.assign-acl$",
                 "__roles__": r"^role\.update\.assign-role$"},
    nested_acls={"__acls_changes__assign_acls": r"^role\.update\.assign-acl$",
                 "__acls_changes__unassign_acls": r"^role\.update\.assign-acl$",
                 "__roles_changes__assign_roles": r"^role\.update\.assign-role$",
                 "__roles_changes__unassign_roles": r"^role\.update\.assign-role$"},
    create_nested=("__acls__", "__roles__"),
    update_nested=("__acls_changes__assign_acls", "__acls_changes__unassign_acls",
                   "__roles_changes__assign_roles", "__roles_changes__unassign_roles"),
    tenant_owned=True,
)

INHERITED = ("SELECT 1 FROM all_acl_role_relations x JOIN role_role_relations rr"
             " ON rr.inherited_id = x.inheritor_id WHERE rr.inheritor_id = %s AND x.acl_id = %s")


@defer.inlineCallbacks
def _assign_acls(cursor: Any, role_id: int, values: Any, assign: bool) -> Generator[Any, Any, None]:
    """Keep the relations minimal (§4.2): a negative is removed before a positive is
    added; an unassigned ACL still inherited becomes a negative."""
    acl_ids = yield _ids(cursor, "acls", values, 6360, "acls")
    for acl_id in acl_ids:
        yield cursor.execute("SELECT positive FROM acl_role_relations WHERE role_id = %s"
                             " AND acl_id = %s", (role_id, acl_id))
        own = cursor.fetchone()
        if assign:
            if own is not None and not own[0]:
                yield cursor.execute("DELETE FROM acl_role_relations WHERE role_id = %s"
                                     " AND acl_id = %s", (role_id, acl_id))
                yield cursor.execute(INHERITED, (role_id, acl_id))
                if cursor.fetchone():
                    continue
                own = None
            if own is None:
                yield cursor.execute("INSERT INTO acl_role_relations (acl_id, role_id, positive)"
                                     " VALUES (%s, %s, TRUE)", (acl_id, role_id))
        else:
            if own is not None and own[0]:
                yield cursor.execute("DELETE FROM acl_role_relations WHERE role_id = %s"
                                     " AND acl_id = %s", (role_id, acl_id))
            yield cursor.execute(INHERITED, (role_id, acl_id))
            if cursor.fetchone() and (own is None or own[0]):
                yield cursor.execute("INSERT INTO acl_role_relations (acl_id, role_id, positive)"
                                     " VALUES (%s, %s, FALSE)", (acl_id, role_id))


@defer.inlineCallbacks
def _assign_roles_to_role(call: Call, cursor: Any, role_id: int, values: Any,
                          assign: bool) -> Generator[Any, Any, None]:
    parents = yield _ids(cursor, "roles", values, 6370, "roles", _role_tenants(call))
    for parent in parents:
        if assign:
            yield cursor.execute(
                "SELECT 1 FROM all_role_role_relations WHERE inheritor_id = %s"
                " AND inherited_id = %s", (parent, role_id))
            if parent == role_id or cursor.fetchone():
                raise APIError(7350)
            yield cursor.execute(
                "INSERT INTO role_role_relations (inheritor_id, inherited_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING", (role_id, parent))
            # own rows the new parent already grants are redundant
            yield cursor.execute(
                "DELETE FROM acl_role_relations ar WHERE ar.role_id = %s AND ar.positive"
                " AND EXISTS (SELECT 1 FROM all_acl_role_relations x WHERE x.inheritor_id = %s"
                " AND x.acl_id = ar.acl_id)", (role_id, parent))
        else:
            yield cursor.execute("DELETE FROM role_role_relations WHERE inheritor_id = %s"
                                 " AND inherited_id = %s", (role_id, parent))
            yield cursor.execute(
                "DELETE FROM acl_role_relations ar WHERE ar.role_id = %s AND NOT ar.positive"
                " AND NOT EXISTS (" + INHERITED.replace("%s AND x.acl_id = %s",
                                                        "ar.role_id AND x.acl_id = ar.acl_id")
                + ")", (role_id,))


@defer.inlineCallbacks
def _role_nested(call: Call, cursor: Any, target: Target, items: list) -> Generator[Any, Any, None]:
    for name, value in items:
        if name in ("__roles__", "__roles_changes__assign_roles"):
            yield _assign_roles_to_role(call, cursor, target.id, value, True)
        elif name == "__roles_changes__unassign_roles":
            yield _assign_roles_to_role(call, cursor, target.id, value, False)
    for name, value in items:
        if name in ("__acls__", "__acls_changes__assign_acls"):
            yield _assign_acls(cursor, target.id, value, True)
        elif name == "__acls_changes__unassign_acls":
            yield _assign_acls(cursor, target.id, value, False)
    yield announce(cursor)


ROLE_COLUMNS = (Column("name", "name"), Column("fixed", "fixed", "bool"),
                Column("internal", "internal", "bool"), Column("description", "description"))


@defer.inlineCallbacks
def _insert_role(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = convert(call, "tenant_id", values["tenant_id"], "int")
    role_id = yield insert_row(call, cursor, "roles", values, ROLE_COLUMNS,
                               given={"tenant_id": tenant_id})
    yield _role_nested(call, cursor, Target(role_id, None, tenant_id), items)
    return role_id


role_create = create_handler(ROLE_SPEC, _insert_role)


def _role_changes(call: Call, cursor: Any, target: Target) -> defer.Deferred[Any]:
    return announce(cursor)


role_update = update_handler(ROLE_SPEC, after=_role_nested)
role_delete = delete_handler(ROLE, check=_role_changes)


# -- ACL listings ------------------------------------------------------------------------


@defer.inlineCallbacks
def acls_in_admin(call: Call) -> Generator[Any, Any, dict]:
    filters = call.params.get("filters") or {}
    admin_id = one_value(call, filters, "admin_id", call.admin.id)
    target = call.admin if admin_id == call.admin.id else (
        yield admin_by_id(call.database, admin_id))
    if target is None or (not call.admin.superadmin and target.tenant_id != call.admin.tenant_id):
        raise APIError(6320, "admin_id")
    closed, opened, hidden = overrides(target, call.scope.multitenant)
    total, rows = yield fetch(call, ACLS_IN_ADMIN, filters=without(filters, "admin_id"),
                              source_params=[closed, opened, admin_id, hidden])
    return success(total=total, rows=rows)


@defer.inlineCallbacks
def acls_in_role(call: Call) -> Generator[Any, Any, dict]:
    filters = call.params.get("filters") or {}
    role_id = one_value(call, filters, "role_id")
    _, _, hidden = overrides(call.admin, call.scope.multitenant)
    total, rows = yield fetch(call, ACLS_IN_ROLE, filters=without(filters, "role_id"),
                              source_params=[role_id, hidden])
    return success(total=total, rows=rows)


@defer.inlineCallbacks
def number_of_acls(call: Call, owner: str) -> Generator[Any, Any, dict]:
    """{pattern: {total, effective}} for SQL-LIKE ``acl_pattern``s (no envelope: QVD 4)."""
    filters = call.params.get("filters") or {}
    owner_id = one_value(call, filters, owner)
    patterns = [v for k, v in (filters.items() if isinstance(filters, dict) else [])
                if k == "acl_pattern"]
    flat: list[str] = []
    for value in patterns:
        flat += value if isinstance(value, list) else [value]
    if not flat or not all(isinstance(p, str) for p in flat):
        raise APIError(6220, "acl_pattern")
    target = call.admin
    if owner == "admin_id":
        target = (yield admin_by_id(call.database, owner_id)) or call.admin
        closed, opened, _ = overrides(target, call.scope.multitenant)
        source, params = ACLS_IN_ADMIN.source, [closed, opened, owner_id]
    else:
        source, params = ACLS_IN_ROLE.source, [owner_id]
    _, _, hidden = overrides(target, call.scope.multitenant)
    result = {}
    for pattern in flat:
        rows = yield call.database.run_query(
            f"SELECT count(*), count(*) FILTER (WHERE oa.operative) FROM {source}"
            " WHERE oa.name LIKE %s", params + [hidden, pattern])
        result[pattern] = {"total": rows[0][0], "effective": rows[0][1]}
    return result
