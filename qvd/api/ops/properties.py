"""Custom property keys: ``property_*`` (declared per tenant) and
``<obj>_*_property_list`` (which kinds of object use a key)."""

from __future__ import annotations

from typing import Any, Callable, Generator

from twisted.internet import defer

from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.model import PROPERTY_LIST, object_property_list
from qvd.api.ops.changes import (
    Arg, Spec, Target, convert, create_handler, delete_handler, each, targets, update_handler,
)

OBJECTS = ("vm", "user", "host", "osf", "di")

SPEC = Spec(
    model=PROPERTY_LIST,
    update={"key": Arg("properties_list", "id", "key"),
            "description": Arg("properties_list", "id", "description")},
    mandatory=("tenant_id", "key"),
    optional=("description",),
    create_acls={"__property_assign__": r"^property\.manage\."},
    create_nested=("__property_assign__",),
    tenant_owned=True,
)


@defer.inlineCallbacks
def _assign(call: Call, cursor: Any, property_id: int, tenant_id: int,
            qvd_object: str) -> Generator[Any, Any, int]:
    if qvd_object not in OBJECTS:
        raise APIError(6231, qvd_object)
    if qvd_object == "host" and tenant_id != 0:
        raise APIError(7214)
    yield cursor.execute("INSERT INTO qvd_object_properties_list (property_id, qvd_object)"
                         " VALUES (%s, %s) RETURNING id", (property_id, qvd_object))
    return cursor.fetchone()[0]


@defer.inlineCallbacks
def _insert(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = convert(call, "tenant_id", values["tenant_id"], "int")
    if tenant_id == -1:
        raise APIError(7215)
    key = convert(call, "key", values["key"], "str")
    yield cursor.execute("SELECT tenant_id FROM properties_list WHERE key = %s"
                         " AND tenant_id IN (%s, 0)", (key, tenant_id))
    row = cursor.fetchone()
    if row is not None:
        raise APIError(7211 if row[0] == 0 and tenant_id != 0 else 7210, key)
    yield cursor.execute("INSERT INTO properties_list (tenant_id, key, description)"
                         " VALUES (%s, %s, %s) RETURNING id",
                         (tenant_id, key, convert(call, "description",
                                                  values.get("description"), "str")))
    property_id = cursor.fetchone()[0]
    for name, value in items:
        objects = value if isinstance(value, list) else [value]
        for qvd_object in objects:
            yield _assign(call, cursor, property_id, tenant_id, qvd_object)
    return property_id


property_create = create_handler(SPEC, _insert, name_argument="key")

property_update = update_handler(SPEC)
property_delete = delete_handler(PROPERTY_LIST)


def create_property_list(qvd_object: str) -> Callable[[Call], defer.Deferred[dict]]:
    """``<obj>_create_property_list``: argument property_id."""
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        arguments = call.params.get("arguments") or {}
        if not isinstance(arguments, dict) or set(arguments) - {"property_id"}:
            raise APIError(6230)
        if arguments.get("property_id") in (None, ""):
            raise APIError(6240, "property_id")
        property_id = convert(call, "property_id", arguments["property_id"], "int")
        rows = yield call.database.run_query(
            "SELECT tenant_id FROM properties_list WHERE id = %s", (property_id,))
        if not rows or (not call.admin.superadmin and rows[0][0] != call.admin.tenant_id):
            raise APIError(7110, "property_id")
        created = []

        @defer.inlineCallbacks
        def transaction(cursor: Any) -> Generator[Any, Any, None]:
            del created[:]
            created.append((yield _assign(call, cursor, property_id, rows[0][0], qvd_object)))
            from qvd import audit
            yield audit.write(cursor, [call.entry(0, object_id=created[0],
                                                  tenant_id=rows[0][0])])

        yield call.database.run_interaction(transaction)
        return success(total=1, rows=[{"id": created[0]}])
    return handler


def delete_property_list(qvd_object: str) -> Callable[[Call], defer.Deferred[dict]]:
    model = object_property_list(qvd_object)

    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        found = yield targets(call, model, "delete")

        def work(cursor: Any, target: Target) -> defer.Deferred[Any]:
            return cursor.execute("DELETE FROM qvd_object_properties_list WHERE id = %s",
                                  (target.id,))
        return (yield each(call, found, work))
    return handler
