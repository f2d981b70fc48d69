"""The WAT's column and filter setups: ``*_view_set`` (upsert) and ``*_view_reset``."""

from __future__ import annotations

from typing import Any, Callable, Generator

from twisted.internet import defer

from qvd import audit
from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.filters import keys, parse_filter
from qvd.api.ops.changes import arguments_among, convert
from qvd.api.ops.configs import matches

VIEW_TYPES = ("filter", "list_column")
DEVICE_TYPES = ("mobile", "desktop")
QVD_OBJECTS = ("user", "vm", "log", "host", "osf", "di", "role", "administrator", "tenant")


def _enum(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise APIError(6330, name)
    return value


def _arguments(call: Call, mandatory: tuple[str, ...]) -> dict[str, Any]:
    arguments = arguments_among(call, mandatory)
    arguments.setdefault("visible", 0)
    for name in mandatory:
        if arguments.get(name) in (None, ""):
            raise APIError(6240, name)
    return arguments


def view_set(owner: str, kind: str) -> Callable[[Call], defer.Deferred[dict]]:
    """``tenant_attribute_view_set`` and its three siblings."""
    attributes = kind == "attribute"
    mandatory = (("field", "qvd_object") if attributes else ("qvd_obj_prop_id",)) + \
        ("visible", "view_type", "device_type") + (("tenant_id",) if owner == "tenant" and
                                                   attributes else ())

    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        if owner == "tenant" and attributes and not call.admin.superadmin:
            call.params.setdefault("arguments", {})["tenant_id"] = call.admin.tenant_id
        a = _arguments(call, mandatory)
        visible = convert(call, "visible", a["visible"], "bool")
        view_type = _enum("view_type", a["view_type"], VIEW_TYPES)
        device_type = _enum("device_type", a["device_type"], DEVICE_TYPES)
        table = f"views_setups_{kind}s_{'tenant' if owner == 'tenant' else 'administrator'}"
        if attributes:
            owner_column = "tenant_id" if owner == "tenant" else "administrator_id"
            owner_id = convert(call, "tenant_id", a["tenant_id"], "int") if owner == "tenant" \
                else call.admin.id
            columns = (owner_column, "field", "view_type", "device_type", "qvd_object")
            values = (owner_id, str(a["field"]), view_type, device_type,
                      _enum("qvd_object", a["qvd_object"], QVD_OBJECTS))
        else:
            prop = convert(call, "qvd_obj_prop_id", a["qvd_obj_prop_id"], "int")
            columns = (("administrator_id",) if owner == "admin" else ()) + \
                ("qvd_obj_prop_id", "view_type", "device_type")
            values = ((call.admin.id,) if owner == "admin" else ()) + (prop, view_type, device_type)
        found = []

        @defer.inlineCallbacks
        def transaction(cursor: Any) -> Generator[Any, Any, None]:
            del found[:]
            yield cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}, visible) VALUES"
                f" ({', '.join(['%s'] * len(columns))}, %s) ON CONFLICT ({', '.join(columns)})"
                " DO UPDATE SET visible = EXCLUDED.visible RETURNING id", values + (visible,))
            found.append(cursor.fetchone()[0])
            yield audit.write(cursor, [call.entry(0, object_id=found[0])])

        yield call.database.run_interaction(transaction)
        return success(total=1, rows=[{"id": found[0]}])
    return handler


def view_reset(owner: str) -> Callable[[Call], defer.Deferred[dict]]:
    """Delete the matching attribute and property setups; {total: deleted}."""
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        tree = parse_filter(call.params.get("filters"))
        allowed = ("tenant_id", "qvd_object") if owner == "tenant" else ("qvd_object",)
        for name in keys(tree):
            if name not in allowed:
                raise APIError(6210, name)
        if owner == "tenant":
            tenant = call.admin.tenant_id if not call.admin.superadmin else None
            attrs = yield call.database.run_query(
                "SELECT id, tenant_id, CAST(qvd_object AS text) FROM views_setups_attributes_tenant")
            props = yield call.database.run_query(
                "SELECT s.id, pl.tenant_id, CAST(q.qvd_object AS text)"
                " FROM views_setups_properties_tenant s JOIN qvd_object_properties_list q"
                " ON q.id = s.qvd_obj_prop_id JOIN properties_list pl ON pl.id = q.property_id")
        else:
            tenant = None
            attrs = yield call.database.run_query(
                "SELECT id, %s, CAST(qvd_object AS text) FROM views_setups_attributes_administrator"
                " WHERE administrator_id = %s", (call.admin.tenant_id, call.admin.id))
            props = yield call.database.run_query(
                "SELECT s.id, %s, CAST(q.qvd_object AS text)"
                " FROM views_setups_properties_administrator s JOIN qvd_object_properties_list q"
                " ON q.id = s.qvd_obj_prop_id WHERE s.administrator_id = %s",
                (call.admin.tenant_id, call.admin.id))

        def chosen(rows: list) -> list[int]:
            return [i for i, t, o in rows if (tenant is None or t == tenant)
                    and matches(tree, {"tenant_id": t, "qvd_object": o})]

        kind = "tenant" if owner == "tenant" else "administrator"
        doomed = (chosen(attrs), chosen(props))

        @defer.inlineCallbacks
        def transaction(cursor: Any) -> Generator[Any, Any, None]:
            yield cursor.execute(f"DELETE FROM views_setups_attributes_{kind} WHERE id = ANY(%s)",
                                 (doomed[0],))
            yield cursor.execute(f"DELETE FROM views_setups_properties_{kind} WHERE id = ANY(%s)",
                                 (doomed[1],))

        yield call.database.run_interaction(transaction)
        return success(total=len(doomed[0]) + len(doomed[1]), rows=[])
    return handler
