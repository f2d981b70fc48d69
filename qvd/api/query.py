"""From a validated request to SQL: fields, filters, scope, order and pages.

Validation follows QVD 4's order (reference §1.6): fields (6250, 4250),
filters (6210, 4220, 6220), order (6600, 6610, 4260).  The WHERE clause is
built from the filter tree with ``qvd.admin.filters.to_sql`` for each
comparison (so ``qa`` and the API agree on what a filter means); one-to-many
filters and custom properties become ``EXISTS`` sub-queries.
"""

from __future__ import annotations

import datetime
import decimal
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from qvd.admin.filters import And, Compare, Field, FilterError, Node, Not, Or, ValueList, to_sql
from qvd.api.errors import APIError
from qvd.api.filters import keys, parse_filter
from qvd.api.model import Model

DEFAULT_BLOCK = 10000


@dataclass
class Scope:
    """Who asks: the tenants they may touch and the ACL checks they pass."""

    admin: Any  # qvd.db.administrators.Administrator
    permissions: Any  # qvd.api.acls.Permissions
    multitenant: bool = True
    config: Any = None
    properties: dict[str, list[str]] = field(default_factory=dict)  # log object -> known keys

    @property
    def superadmin(self) -> bool:
        return self.admin.superadmin

    def tenant_condition(self, model: Model, type_of_action: str) -> tuple[str, list]:
        """The forced tenant scope (§4.4); hosts belong to the supertenant."""
        if model.tenant_sql is None:
            return "TRUE", []
        if self.superadmin:
            return ("TRUE", []) if type_of_action == "list" else (f"{model.tenant_sql} <> -1", [])
        shared = type_of_action == "list" and model.shared
        tenants = [self.admin.tenant_id] + ([-1] if shared else [])
        return f"{model.tenant_sql} = ANY(%s)", [tenants]


def normalise_tree(node: Optional[Node], key: str, fn: Callable[[str], str]) -> Optional[Node]:
    """``node`` with every value compared to ``key`` passed through ``fn``."""
    if node is None:
        return None
    if isinstance(node, Compare):
        if node.key != key:
            return node
        value = node.value
        if isinstance(value, str):
            return Compare(key, node.op, fn(value))
        if isinstance(value, ValueList):
            return Compare(key, node.op, ValueList(tuple(fn(v) for v in value.items)))
        return node
    if isinstance(node, (And, Or)):
        return type(node)(normalise_tree(node.left, key, fn), normalise_tree(node.right, key, fn))
    return Not(normalise_tree(node.operand, key, fn))


@dataclass
class Where:
    sql: str
    params: list
    joins: set[str]


class Selection:
    """The filters of one request, checked against ``model`` and turned into SQL."""

    def __init__(self, scope: Scope, model: Model, type_of_action: str, filters: Any,
                 *, tree: Optional[Node] = None):
        self.scope = scope
        self.model = model
        self.type = type_of_action
        self.tree = parse_filter(filters) if tree is None else tree
        self.check()

    def property_keys(self) -> list[str]:
        return self.scope.properties.get(self.model.log_object, []) if self.model.property_table \
            else []

    def check(self) -> None:
        available = self.model.filters_for(self.type)
        names = list(keys(self.tree))
        for name in names:
            if name not in available and name not in self.property_keys():
                raise APIError(6210, name)
            column = self.model.columns.get(name)
            if column is not None and not self.scope.permissions.allows(
                    [column.acl] if column.acl else None):
                raise APIError(4220, name)
            if name == "tenant_id" and not self.scope.superadmin and \
                    self.model.tenant_sql is not None:
                raise APIError(4220, name)
        for name in self.model.mandatory_filters.get(self.type, ()):
            if name not in names:
                raise APIError(6220, name)

    def where(self, extra: str = "TRUE", extra_params: Optional[list] = None) -> Where:
        joins: set[str] = set()
        params: list = []
        tree_sql = "TRUE" if self.tree is None else self._node(self.tree, params, joins, False)
        scope_sql, scope_params = self.scope.tenant_condition(self.model, self.type)
        parts = [tree_sql, scope_sql, extra]
        params += scope_params + (extra_params or [])
        if self.model.always:
            parts.append(self.model.always)
        return Where(" AND ".join(f"({p})" for p in parts if p != "TRUE") or "TRUE",
                     params, joins)

    def _node(self, node: Node, params: list, joins: set[str], negated: bool) -> str:
        if isinstance(node, (And, Or)):
            left = self._node(node.left, params, joins, negated)
            right = self._node(node.right, params, joins, negated)
            return f"({left} {'AND' if isinstance(node, And) else 'OR'} {right})"
        if isinstance(node, Not):
            return f"(NOT {self._node(node.operand, params, joins, True)})"
        cond = self._compare(node, params, joins)
        if not negated and cond.startswith("COALESCE((") and cond.endswith("), FALSE)"):
            # outside a NOT, WHERE treats NULL as false already; without the COALESCE
            # the planner can estimate the condition and use indexes
            return cond[len("COALESCE("):-len(", FALSE)")]
        return cond

    def _compare(self, node: Compare, params: list, joins: set[str]) -> str:
        column = self.model.columns.get(node.key)
        try:
            if column is None:  # a custom property
                cond, cond_params = to_sql(node, {node.key: Field("xp.value", "str")},
                                           self.model.name)
                params += [node.key] + cond_params
                return (f"EXISTS (SELECT 1 FROM {self.model.property_table} xp"
                        " JOIN qvd_object_properties_list q ON q.id = xp.property_id"
                        " JOIN properties_list pl ON pl.id = q.property_id"
                        f" WHERE xp.{self.model.property_key} = {self.model.id_sql}"
                        f" AND pl.key = %s AND {cond})")
            cond, cond_params = to_sql(node, {node.key: Field(column.sql, column.type)},
                                       self.model.name)
        except FilterError as e:
            raise APIError(6320, node.key, str(e)) from None
        params += cond_params
        if column.exists:
            return f"EXISTS ({column.exists.format(cond=cond)})"
        joins.update(column.joins)
        return cond


def requested_fields(scope: Scope, model: Model, fields: Any, type_of_action: str = "list",
                     available: Optional[tuple[str, ...]] = None) -> list[str]:
    """The output columns: those asked for (each available and allowed), or every
    available one the administrator may see."""
    available = tuple(available or model.fields)
    if scope.superadmin and type_of_action == "list":
        available += tuple(n for n in ("tenant_id", "tenant_name")
                           if n in model.columns and n not in available)
    if fields in (None, "", []):
        return [n for n in available if _visible(scope, model, n)]
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise APIError(6250, info="fields must be a list of names")
    for name in fields:
        if name not in available:
            raise APIError(6250, name)
        if not _visible(scope, model, name):
            raise APIError(4250, name)
    return list(dict.fromkeys(fields))


def _visible(scope: Scope, model: Model, name: str) -> bool:
    acl = model.columns[name].acl
    return scope.permissions.allows([acl] if acl else None)


def order_clause(scope: Scope, model: Model, order_by: Any) -> tuple[str, set[str]]:
    """``ORDER BY`` text (always ending with the id, for stable pages) and its joins."""
    names: list[str] = list(model.default_order)
    descending = False
    if order_by not in (None, "", {}, []):
        if not isinstance(order_by, dict):
            raise APIError(6610, info="order_by is {\"field\": ..., \"order\": \"-asc\"|\"-desc\"}")
        direction = order_by.get("order", "-asc")
        if direction not in ("-asc", "-desc"):
            raise APIError(6600, direction)
        descending = direction == "-desc"
        requested = order_by.get("field", [])
        names = [requested] if isinstance(requested, str) else list(requested or [])
        for name in names:
            if not isinstance(name, str) or name not in model.order:
                raise APIError(6610, name)
            acl = model.columns[name].acl
            if not scope.permissions.allows([acl] if acl else None):
                raise APIError(4260, name)
    suffix = " DESC" if descending else ""
    joins: set[str] = set()
    parts = []
    for name in names:
        column = model.columns[name]
        joins.update(column.joins)
        parts.append(f"{column.sql}{suffix}")
    parts.append(f"{model.id_sql}{suffix}")
    return ", ".join(parts), joins


def page(params: dict[str, Any]) -> tuple[int, int]:
    """(limit, offset) from ``block`` (page size) and ``offset`` (1-based page number)."""
    try:
        block = int(params.get("block") or DEFAULT_BLOCK)
        number = int(params.get("offset") or 1)
    except (TypeError, ValueError):
        raise APIError(6310, "offset/block", "offset and block are whole numbers") from None
    if block < 1 or number < 1:
        raise APIError(6310, "offset/block", "offset and block start at 1")
    return block, (number - 1) * block


def joins_sql(model: Model, joins: set[str]) -> str:
    return " ".join(model.joins[name] for name in model.joins if name in joins)


def list_sql(model: Model, fields: list[str], where: Where, order: str, order_joins: set[str],
             limit: int, offset: int, source_params: list) -> tuple[str, list]:
    """One statement: the page's ids and the total, then their fields, in order."""
    inner_joins = joins_sql(model, where.joins | order_joins)
    outer_joins: set[str] = set()
    for name in fields:
        outer_joins.update(model.columns[name].joins)
    exprs = ", ".join(f"{model.columns[n].sql}" for n in fields) or "NULL"
    sql = (
        f"WITH page AS MATERIALIZED (SELECT {model.id_sql} AS _id, count(*) OVER () AS _total,"
        f" row_number() OVER (ORDER BY {order}) AS _pos FROM {model.source} {inner_joins}"
        f" WHERE {where.sql} ORDER BY {order} LIMIT %s OFFSET %s)"
        f" SELECT page._total, {exprs} FROM {model.source} {joins_sql(model, outer_joins)}"
        f" JOIN page ON page._id = {model.id_sql} ORDER BY page._pos"
    )
    return sql, source_params + where.params + [limit, offset] + source_params


def count_sql(model: Model, where: Where, source_params: list) -> tuple[str, list]:
    return (f"SELECT count(*) FROM {model.source} {joins_sql(model, where.joins)}"
            f" WHERE {where.sql}", source_params + where.params)


def ids_sql(model: Model, where: Where, order: str, order_joins: set[str], limit: int,
            offset: int) -> tuple[str, list]:
    """The ids (and names) a change selects: pagination applies, as in QVD 4."""
    name = model.name_sql or "NULL"
    return (f"SELECT {model.id_sql}, {name}, {model.tenant_sql or '0'} FROM {model.source}"
            f" {joins_sql(model, where.joins | order_joins)} WHERE {where.sql}"
            f" ORDER BY {order} LIMIT %s OFFSET %s", where.params + [limit, offset])


# -- output -------------------------------------------------------------------------------


def remaining(value: Optional[datetime.datetime], now: datetime.datetime) -> Optional[dict]:
    """QVD 4's time_until_expiration_*: {months, days, hours, minutes, seconds, expired}."""
    if value is None:
        return None
    seconds = int((value - now).total_seconds())
    expired = 1 if seconds <= 0 else 0
    seconds = max(seconds, 0)
    months, seconds = divmod(seconds, 30 * 86400)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return {"months": months, "days": days, "hours": hours, "minutes": minutes,
            "seconds": seconds, "expired": expired}


def mac_of(ip: Optional[str], prefix: str) -> Optional[str]:
    """MAC = vm.network.mac.prefix + the last three octets of the IP in hex."""
    if not ip:
        return None
    try:
        octets = [int(x) for x in ip.split(".")][1:]
    except ValueError:
        return None
    return prefix.rstrip(":") + ":" + ":".join(f"{o:02x}" for o in octets)


def json_value(value: Any) -> Any:
    """A database value as QVD 4's JSON carries it (integers for booleans)."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def output_rows(model: Model, fields: list[str], rows: list[tuple], config: Any) -> list[dict]:
    now = datetime.datetime.utcnow()
    prefix = config.get("vm.network.mac.prefix", default="54:52:00") if config else "54:52:00"
    out = []
    for row in rows:
        item = {}
        for name, value in zip(fields, row):
            convert = model.columns[name].convert
            if convert == "remaining":
                value = remaining(value, now)
            elif convert == "mac":
                value = mac_of(value, prefix)
            item[name] = json_value(value)
        out.append(item)
    return out
