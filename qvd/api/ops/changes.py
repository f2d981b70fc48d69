"""What every create, update, delete and exec shares (reference §2.2).

Arguments are checked before anything is written: unknown ones (6230),
missing mandatory ones (6240), creation and nested-query ACLs (4230).  A
change selects its objects with the request's filters (zero: 1300) and
changes each in a transaction of its own with its audit row; objects that
fail are reported under ``failures`` (1200) while the others stay changed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Generator, Mapping, Optional, Sequence

import psycopg2
from twisted.internet import defer

from qvd import audit
from qvd.api.call import Call
from qvd.api.dispatch import db_error
from qvd.api.errors import APIError, success
from qvd.api.model import Model
from qvd.api.ops.listing import normalise_name, selection
from qvd.api.query import ids_sql, order_clause, page
from qvd.config import parse_bool
from qvd.passwords import SALT_KEY, qvd_hash

NESTED_GROUPS = ("__properties_changes__", "__tags_changes__", "__acls_changes__",
                 "__roles_changes__")


@dataclass(frozen=True)
class Arg:
    """An updatable argument: which column of which table (keyed by the object id)."""

    table: str
    key: str
    column: str
    kind: str = "str"


@dataclass(frozen=True)
class Target:
    id: int
    name: Optional[str]
    tenant_id: Optional[int]


@dataclass(frozen=True)
class Spec:
    """What one kind of object accepts in create and update."""

    model: Model
    update: Mapping[str, Arg] = field(default_factory=dict)
    mandatory: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    create_acls: Mapping[str, str] = field(default_factory=dict)
    nested_acls: Mapping[str, str] = field(default_factory=dict)
    create_nested: tuple[str, ...] = ()
    update_nested: tuple[str, ...] = ()
    tenant_owned: bool = False
    properties: bool = False


def nested(arguments: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The nested queries of ``arguments``, by their flat names (``__tags_changes__create``)."""
    found = []
    for key, value in arguments.items():
        if not (key.startswith("__") and key.endswith("__")):
            continue
        if key in NESTED_GROUPS:
            if not isinstance(value, dict):
                raise APIError(6231, key)
            found += [(key + sub, v) for sub, v in value.items()]
        else:
            found.append((key, value))
    return found


def plain(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if not (k.startswith("__") and k.endswith("__"))}


def check_nested(call: Call, spec: Spec, allowed: tuple[str, ...]) -> list[tuple[str, Any]]:
    items = nested(call.arguments)
    for name, _ in items:
        if name not in allowed:
            raise APIError(6230, name)
        acl = spec.nested_acls.get(name) or spec.create_acls.get(name)
        if acl and not call.permissions.allows([acl]):
            raise APIError(4230, name)
    return items


def arguments_among(call: Call, allowed: Collection[str]) -> dict[str, Any]:
    """The request's arguments, each one of ``allowed`` (else 6230 naming the first other)."""
    arguments = call.params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise APIError(6230)
    for name in arguments:
        if name not in allowed:
            raise APIError(6230, name)
    return arguments


def arguments_of(call: Call) -> dict[str, Any]:
    arguments = call.params.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise APIError(6230, info="arguments must be an object")
    return arguments


# -- values -------------------------------------------------------------------------------


def convert(call: Call, name: str, value: Any, kind: str, tenant_id: Optional[int] = None) -> Any:
    """An argument's value as the database takes it; APIError 6330 naming it if bad.
    An empty string is NULL (QVD 4)."""
    if value == "" and kind not in ("password",):
        return None
    if value is None:
        return None
    try:
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            return int(str(value).strip())
        if kind == "bool":
            flag = value if isinstance(value, bool) else parse_bool(str(value))
            if flag is None:
                raise ValueError
            return flag
        if kind == "timestamp":
            return datetime.datetime.fromisoformat(str(value).strip().replace("T", " "))
        if kind == "address":
            return str(ipaddress.ip_address(str(value).strip()))
        if kind == "password":
            if not isinstance(value, str) or not value:
                raise ValueError
            return qvd_hash(value, call.config.get(SALT_KEY))
        if kind == "name":
            text = normalise_name(call, str(value), tenant_id)
            if not text:
                raise ValueError
            return text
        if kind == "language":
            if value not in ("es", "en", "auto", "default"):
                raise ValueError
            return value
        if kind == "block":
            number = int(str(value))
            if number < 1:
                raise ValueError
            return number
    except (TypeError, ValueError):
        raise APIError(6330, name) from None
    if isinstance(value, (dict, list)):
        raise APIError(6330, name)
    text = str(value)
    if "\0" in text:
        raise APIError(6330, name)
    return text


# -- selection and per-object transactions -----------------------------------------------


@defer.inlineCallbacks
def targets(call: Call, model: Model, type_of_action: str,
            extra: str = "TRUE", extra_params: Optional[list] = None) -> Generator[Any, Any, list[Target]]:
    """The objects a change applies to (its page of them); 1300 when none."""
    chosen = yield selection(call, model, type_of_action)
    where = chosen.where(extra, extra_params)
    order, order_joins = order_clause(call.scope, model, None)
    limit, offset = page(call.params)
    sql, params = ids_sql(model, where, order, order_joins, limit, offset)
    rows = yield call.database.run_query(sql, params)
    if not rows:
        raise APIError(1300)
    return [Target(*row) for row in rows]


@defer.inlineCallbacks
def each(call: Call, found: list[Target],
         work: Callable[[Any, Target], defer.Deferred[Any]],
         kind: str = "") -> Generator[Any, Any, dict]:
    """Run ``work(cursor, target)`` per object, each in its own transaction with its
    audit row; failures are collected (1200) and audited too."""
    failures: dict[str, APIError] = {}
    for target in found:
        @defer.inlineCallbacks
        def transaction(cursor: Any, target: Target = target) -> Generator[Any, Any, None]:
            yield work(cursor, target)
            yield audit.write(cursor, [call.entry(0, object_id=target.id,
                                                  object_name=target.name,
                                                  **tenant_of(call, target))])
        try:
            yield call.database.run_interaction(transaction)
        except APIError as e:
            failures[str(target.id)] = e
        except psycopg2.Error as e:
            failures[str(target.id)] = db_error(e, call.action.type, kind)
        else:
            continue
        yield audit.record(call.database, [call.entry(
            failures[str(target.id)].code, object_id=target.id, object_name=target.name,
            **tenant_of(call, target))])
    if failures:
        error = APIError(1200, failures=failures)
        error.audited = True
        raise error
    return success(total=len(found), rows=[])


def tenant_of(call: Call, target: Target) -> dict[str, Any]:
    if target.tenant_id is None or call.action.model is None or \
            call.action.model.tenant_sql is None:
        return {}
    return {"tenant_id": target.tenant_id, "tenant_name": None}


# -- generic update and delete -------------------------------------------------------------


def update_handler(spec: Spec, check: Optional[Callable] = None,
                   after: Optional[Callable] = None) -> Callable[[Call], defer.Deferred[dict]]:
    """``<obj>_update``: plain arguments by ``spec.update``, properties, nested queries.
    ``check(call, cursor, target)`` may refuse an object; ``after(call, cursor, target,
    items)`` runs the nested queries the generic code does not know."""

    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        arguments = arguments_of(call)
        values = plain(arguments)
        known_properties = yield property_keys(call, spec) if spec.properties else []
        for name in values:
            if name not in spec.update and name not in known_properties:
                raise APIError(6230, name)
        items = check_nested(call, spec, spec.update_nested)
        found = yield targets(call, spec.model, "update")

        @defer.inlineCallbacks
        def work(cursor: Any, target: Target) -> Generator[Any, Any, None]:
            if check is not None:
                yield check(call, cursor, target)
            by_table: dict[tuple[str, str], list[tuple[str, Any]]] = {}
            for name, raw in values.items():
                arg = spec.update.get(name)
                if arg is None:
                    continue
                value = convert(call, name, raw, arg.kind, target.tenant_id)
                by_table.setdefault((arg.table, arg.key), []).append((arg.column, value))
            for (table, key), pairs in by_table.items():
                sets = ", ".join(f"{column} = %s" for column, _ in pairs)
                yield cursor.execute(f"UPDATE {table} SET {sets} WHERE {key} = %s",
                                     [v for _, v in pairs] + [target.id])
            props = {k: v for k, v in values.items() if k not in spec.update}
            for name, value in items:
                if name == "__properties_changes__set":
                    props.update(_mapping(name, value))
            if props:
                yield set_properties(call, cursor, spec.model, target, props)
            for name, value in items:
                if name == "__properties_changes__delete":
                    yield delete_properties(cursor, spec.model, target, _names(name, value))
            if after is not None:
                yield after(call, cursor, target, items)

        return (yield each(call, found, work))

    return handler


def delete_handler(model: Model, check: Optional[Callable] = None,
                   before: Optional[Callable] = None) -> Callable[[Call], defer.Deferred[dict]]:
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        found = yield targets(call, model, "delete")

        @defer.inlineCallbacks
        def work(cursor: Any, target: Target) -> Generator[Any, Any, None]:
            if check is not None:
                yield check(call, cursor, target)
            if before is not None:
                yield before(call, cursor, target)
            table = model.source.split()[0]
            yield cursor.execute(f"DELETE FROM {table} WHERE id = %s", (target.id,))

        return (yield each(call, found, work))

    return handler


# -- custom properties ---------------------------------------------------------------------

PROPERTY_FOR = (
    "SELECT q.id FROM qvd_object_properties_list q JOIN properties_list pl"
    " ON pl.id = q.property_id WHERE q.qvd_object = %s AND pl.key = %s"
    " AND pl.tenant_id = ANY(%s) ORDER BY pl.tenant_id DESC LIMIT 1"
)


@defer.inlineCallbacks
def property_keys(call: Call, spec: Spec) -> Generator[Any, Any, list[str]]:
    rows = yield call.database.run_query(
        "SELECT DISTINCT pl.key FROM properties_list pl JOIN qvd_object_properties_list q"
        " ON q.property_id = pl.id WHERE q.qvd_object = %s", (spec.model.log_object,))
    return [r[0] for r in rows]


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise APIError(6231, name)
    return value


def _names(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(6231, name)
    return value


@defer.inlineCallbacks
def set_properties(call: Call, cursor: Any, model: Model, target: Target,
                   values: Mapping[str, Any]) -> Generator[Any, Any, None]:
    """Set declared custom properties (declared for the object's tenant or tenant 0)."""
    if model.log_object == "host" and not call.admin.superadmin:
        raise APIError(7213)
    tenants = [0] if target.tenant_id is None else [target.tenant_id, 0]
    for key, value in values.items():
        if value is None or isinstance(value, (dict, list)):
            raise APIError(6340, key)
        yield cursor.execute(PROPERTY_FOR, (model.log_object, key, tenants))
        row = cursor.fetchone()
        if row is None:
            raise APIError(6230, key)
        yield cursor.execute(
            f"INSERT INTO {model.property_table} ({model.property_key}, property_id, value)"
            f" VALUES (%s, %s, %s) ON CONFLICT ({model.property_key}, property_id)"
            " DO UPDATE SET value = EXCLUDED.value", (target.id, row[0], str(value)))


def delete_properties(cursor: Any, model: Model, target: Target,
                      keys: list[str]) -> defer.Deferred[Any]:
    return cursor.execute(
        f"DELETE FROM {model.property_table} xp USING qvd_object_properties_list q,"
        " properties_list pl WHERE q.id = xp.property_id AND pl.id = q.property_id"
        f" AND xp.{model.property_key} = %s AND pl.key = ANY(%s)", (target.id, keys))


def nested_property_acls(model_object: str) -> dict[str, str]:
    """The ACLs of the custom-property nested queries of an object with properties."""
    return {"__properties_changes__set": rf"^{model_object}\.update\.properties$",
            "__properties_changes__delete": rf"^{model_object}\.update\.properties$",
            "__properties__": rf"^{model_object}\.create\.properties$"}


PROPERTY_NESTED = ("__properties_changes__set", "__properties_changes__delete")

NestedAction = Callable[[str, Any], defer.Deferred[Any]]


@defer.inlineCallbacks
def apply_nested(items: list[tuple[str, Any]],
                 actions: Mapping[str, NestedAction]) -> Generator[Any, Any, None]:
    """Run each nested query that has an action, in the order the caller sent them."""
    for name, value in items:
        action = actions.get(name)
        if action is not None:
            yield action(name, value)


def creation_properties(call: Call, cursor: Any, model: Model,
                        target: Target) -> NestedAction:
    """The ``__properties__`` action of a create: set the new object's properties."""
    return lambda name, value: set_properties(call, cursor, model, target, _mapping(name, value))


# -- create --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column a create fills from one argument, converted as ``kind`` (not a listing's
    ``qvd.api.model.Column``)."""

    column: str
    argument: str
    kind: str = "str"
    missing: Any = None  # the value when the argument is absent or empty


@defer.inlineCallbacks
def insert_row(call: Call, cursor: Any, table: str, values: Mapping[str, Any],
               columns: Sequence[Column],
               given: Optional[Mapping[str, Any]] = None) -> Generator[Any, Any, int]:
    """INSERT one row (``given`` columns, then ``columns`` converted in order, so the
    first bad argument is the one reported); its new id.  Names are normalised within
    the row's ``tenant_id``."""
    given = given or {}
    converted = []
    for c in columns:
        value = convert(call, c.argument, values.get(c.argument), c.kind, given.get("tenant_id"))
        converted.append(c.missing if value is None else value)
    names = list(given) + [c.column for c in columns]
    yield cursor.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
        " RETURNING id", list(given.values()) + converted)
    return cursor.fetchone()[0]


def creation_values(call: Call, spec: Spec) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """(plain arguments with defaults, nested queries), checked (6230, 6240, 4230)."""
    arguments = arguments_of(call)
    values = plain(arguments)
    allowed = set(spec.mandatory) | set(spec.optional)
    for name in values:
        if name not in allowed:
            raise APIError(6230, name)
        acl = spec.create_acls.get(name)
        if acl and not call.permissions.allows([acl]):
            raise APIError(4230, name)
    if spec.tenant_owned:
        if call.admin.superadmin:
            if values.get("tenant_id") in (None, ""):
                raise APIError(6240, "tenant_id")
        else:
            values["tenant_id"] = call.admin.tenant_id
    for name in spec.mandatory:
        if values.get(name) in (None, ""):
            default = spec.defaults.get(name)
            if default is None:
                raise APIError(6240, name)
            values[name] = default(call) if callable(default) else default
    items = check_nested(call, spec, spec.create_nested)
    return values, items


@defer.inlineCallbacks
def create(call: Call, spec: Spec, insert: Callable[[Any, dict, list], defer.Deferred[int]],
           name_of: Callable[[dict], Optional[str]]) -> Generator[Any, Any, dict]:
    """Run ``insert(cursor, values, nested)`` (returning the new id) with its audit row;
    a refusal is audited too."""
    values, items = creation_values(call, spec)
    created: list[int] = []

    @defer.inlineCallbacks
    def transaction(cursor: Any) -> Generator[Any, Any, None]:
        del created[:]
        new_id = yield insert(cursor, values, items)
        created.append(new_id)
        tenant = values.get("tenant_id")
        yield audit.write(cursor, [call.entry(
            0, object_id=new_id, object_name=name_of(values),
            **({"tenant_id": int(tenant), "tenant_name": None} if tenant not in (None, "") and
               str(tenant).lstrip("-").isdigit() else {}))])

    try:
        yield call.database.run_interaction(transaction)
    except psycopg2.Error as e:
        raise db_error(e, "create") from None
    return success(total=1, rows=[{"id": created[0]}])


Insert = Callable[[Call, Any, dict, list], defer.Deferred[int]]


def create_handler(spec: Spec, insert: Insert,
                   name_argument: str = "name") -> Callable[[Call], defer.Deferred[dict]]:
    """The ``*_create`` action of one kind of object: ``insert(call, cursor, values, nested)``
    audited under the value of ``name_argument``."""

    def handler(call: Call) -> defer.Deferred[dict]:
        return create(call, spec, lambda cursor, values, items: insert(call, cursor, values, items),
                      lambda values: values.get(name_argument))

    return handler
