"""``*_get_list`` and ``*_get_state``: one page of objects, in one statement."""

from __future__ import annotations

from typing import Any, Callable, Generator, Optional

from twisted.internet import defer

from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.filters import keys, parse_filter
from qvd.api.model import Model
from qvd.api.query import (
    Selection, count_sql, list_sql, normalise_tree, order_clause, output_rows, page,
    requested_fields,
)

NORMALISED_NAMES = ("User", "Administrator", "Tenant")

PROPERTY_KEYS = (
    "SELECT DISTINCT pl.key FROM properties_list pl JOIN qvd_object_properties_list q"
    " ON q.property_id = pl.id WHERE q.qvd_object = %s"
)


def normalise_name(call: Call, value: str, tenant_id: Optional[int] = None) -> str:
    """User, administrator and tenant names: trimmed, and lowercased unless
    ``model.user.login.case-sensitive``."""
    value = value.strip()
    sensitive = call.config.get_bool("model.user.login.case-sensitive", tenant_id, default=False)
    return value if sensitive else value.lower()


@defer.inlineCallbacks
def selection(call: Call, model: Model, type_of_action: str,
              filters: Any = None) -> Generator[Any, Any, Selection]:
    """The request's filters for ``model``, with custom property keys known."""
    tree = parse_filter(call.params.get("filters") if filters is None else filters)
    if model.name in NORMALISED_NAMES:
        tree = normalise_tree(tree, "name", lambda v: normalise_name(call, v))
    unknown = [k for k in keys(tree) if k not in model.columns]
    if unknown and model.property_table:
        rows = yield call.database.run_query(PROPERTY_KEYS, (model.log_object,))
        call.scope.properties[model.log_object] = [r[0] for r in rows]
    return Selection(call.scope, model, type_of_action, None, tree=tree)


@defer.inlineCallbacks
def fetch(call: Call, model: Model, type_of_action: str = "list", *,
          fields: Optional[list[str]] = None, filters: Any = None,
          source_params: Optional[list] = None, extra: str = "TRUE",
          extra_params: Optional[list] = None) -> Generator[Any, Any, tuple[int, list[dict]]]:
    """(total, rows) of one page of ``model`` for this call."""
    if fields is None:
        fields = requested_fields(call.scope, model, call.params.get("fields"), type_of_action)
    chosen = yield selection(call, model, type_of_action, filters)
    where = chosen.where(extra, extra_params)
    order, order_joins = order_clause(call.scope, model, call.params.get("order_by"))
    limit, offset = page(call.params)
    sql, params = list_sql(model, fields, where, order, order_joins, limit, offset,
                           source_params or [])
    rows = yield call.database.run_query(sql, params)
    if rows:
        total = rows[0][0]
    elif offset:
        sql, params = count_sql(model, where, source_params or [])
        total = (yield call.database.run_query(sql, params))[0][0]
    else:
        total = 0
    return total, output_rows(model, fields, [r[1:] for r in rows], call.config)


def list_handler(model: Model) -> Callable[[Call], defer.Deferred[dict]]:
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        total, rows = yield fetch(call, model)
        return success(total=total, rows=rows)
    return handler


def state_handler(model: Model) -> Callable[[Call], defer.Deferred[dict]]:
    @defer.inlineCallbacks
    def handler(call: Call) -> Generator[Any, Any, dict]:
        fields = list(model.state_fields)
        total, rows = yield fetch(call, model, "state", fields=fields)
        return success(total=total, rows=rows)
    return handler


def one_value(call: Call, filters: Any, key: str, default: Optional[int] = None) -> int:
    """The single integer a filter must give ``key`` (6220 if absent, 6322 if several)."""
    values = [v for k, v in _pairs(filters) if k == key]
    if not values:
        if default is None:
            raise APIError(6220, key)
        return default
    flat = []
    for value in values:
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("=", "-in"):
            value = next(iter(value.values()))
        flat += value if isinstance(value, list) else [value]
    if len(flat) != 1:
        raise APIError(6322, key)
    try:
        return int(flat[0])
    except (TypeError, ValueError):
        raise APIError(6320, key) from None


def without(filters: Any, key: str) -> Any:
    """``filters`` minus its top-level ``key`` conditions."""
    return [x for pair in _pairs(filters) if pair[0] != key for x in pair]


def _pairs(filters: Any) -> list[tuple[Any, Any]]:
    if isinstance(filters, dict):
        return list(filters.items())
    if isinstance(filters, list):
        return list(zip(filters[::2], filters[1::2]))
    return []
