"""``config_get``, ``config_set``, ``config_delete`` and ``config_ssl``: the
``configs`` and ``ssl_configs`` tables through the API (reference §2.3, §2.4).

``config_get`` lists every known key (built-in defaults, node.conf, database)
of the tenants asked for, filtered in memory as QVD 4 does; keys of the
agent, internal, client and database families are never shown.
"""

from __future__ import annotations

import os
import re
from typing import Any, Generator, Optional

from twisted.internet import defer, threads

from qvd import audit
from qvd.admin.filters import Compare, Node, ValueList, ValueRange, holds
from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.filters import keys, parse_filter
from qvd.api.ops.changes import arguments_among
from qvd.api.query import page
from qvd.config import GLOBAL_TENANT
from qvd.db.configs import load_configs

HIDDEN = ("vma.", "internal.", "client.", "database.")
FIELDS = ("key", "tenant_id", "operative_value", "default_value", "is_default")
KEY_MAX = 64
SSL_FILES = ("key", "cert", "crl", "ca")


def _like(pattern: str) -> re.Pattern[str]:
    parts = []
    escaped = False
    for ch in pattern:
        if escaped:
            parts.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.S)


def matches(node: Optional[Node], row: dict[str, Any]) -> bool:
    """Whether ``row`` satisfies the filter tree (values compared as text, numbers as
    numbers); a missing or NULL value satisfies nothing."""
    return node is None or holds(node, lambda comparison: _holds(comparison, row))


def _holds(node: Compare, row: dict[str, Any]) -> bool:
    value = row.get(node.key)
    if value is None:
        return False
    operand = node.value
    if isinstance(operand, ValueList):
        found = any(_compare(value, "=", item) for item in operand.items)
        return found if node.op == "=" else not found
    if isinstance(operand, ValueRange):
        inside = _compare(value, ">=", operand.low) and _compare(value, "<=", operand.high)
        return inside if node.op == "=" else not inside
    return _compare(value, node.op, operand)


def _compare(value: Any, op: str, operand: str) -> bool:
    if op == "~":
        return bool(_like(operand).fullmatch(str(value)))
    left: Any = value
    right: Any = operand
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            right = type(value)(operand)
        except ValueError:
            return False
    elif isinstance(value, bool):
        left, right = int(value), 1 if operand in ("1", "true", "yes") else 0
    else:
        left = str(value)
    return {"=": left == right, "!=": left != right, "<": left < right, ">": left > right,
            "<=": left <= right, ">=": left >= right}[op]


def _rows_for(call: Call, tenant_id: int) -> list[dict[str, Any]]:
    config = call.config
    globals_ = config.effective()
    if tenant_id == GLOBAL_TENANT:
        stored = config.db_values(GLOBAL_TENANT)
        names = sorted(globals_)
        return [{"key": k, "tenant_id": tenant_id, "operative_value": globals_[k],
                 "default_value": config.fallback(k), "is_default": 0 if k in stored else 1}
                for k in names if not k.startswith(HIDDEN)]
    stored = config.db_values(tenant_id)
    names = sorted(set(globals_) | set(stored))
    return [{"key": k, "tenant_id": tenant_id,
             "operative_value": stored.get(k, globals_.get(k)),
             "default_value": globals_.get(k), "is_default": 0 if k in stored else 1}
            for k in names if not k.startswith(HIDDEN)]


def config_get(call: Call) -> defer.Deferred[dict]:
    tree = parse_filter(call.params.get("filters"))
    for name in keys(tree):
        if name not in FIELDS:
            raise APIError(6210, name)
    if "tenant_id" in keys(tree) and not call.admin.superadmin:
        raise APIError(4220, "tenant_id")
    if call.admin.superadmin:
        tenants = [GLOBAL_TENANT] + sorted({t for t in call.config.tenants_in_db()
                                            if t != GLOBAL_TENANT}) \
            if "tenant_id" in keys(tree) else [GLOBAL_TENANT]
    else:
        tenants = [call.admin.tenant_id if call.scope.multitenant else GLOBAL_TENANT]
    rows = [row for tenant in tenants for row in _rows_for(call, tenant) if matches(tree, row)]
    fields = call.params.get("fields") or list(FIELDS)
    for name in fields:
        if name not in FIELDS:
            raise APIError(6250, name)
    order = call.params.get("order_by") or {}
    if isinstance(order, dict) and order.get("order") == "-desc":
        rows.reverse()
    limit, offset = page(call.params)
    chosen = rows[offset:offset + limit]
    return defer.succeed(success(total=len(rows),
                                 rows=[{f: row[f] for f in fields} for row in chosen]))


@defer.inlineCallbacks
def config_set(call: Call) -> Generator[Any, Any, dict]:
    arguments = arguments_among(call, ("tenant_id", "key", "value"))
    key, value = arguments.get("key"), arguments.get("value")
    if not isinstance(key, str) or not key:
        raise APIError(6240, "key")
    if value is None:
        raise APIError(6240, "value")
    if len(key) > KEY_MAX or key.startswith(HIDDEN) or "\0" in key:
        raise APIError(6380, key)
    tenant_id = arguments.get("tenant_id")
    if not call.admin.superadmin:
        own = call.admin.tenant_id if call.scope.multitenant else GLOBAL_TENANT
        if tenant_id not in (None, "", own, str(own)):
            raise APIError(4230, "tenant_id")
        tenant_id = own
        if call.config.fallback(key) is None:
            raise APIError(7382, key)
    elif tenant_id in (None, ""):
        raise APIError(6240, "tenant_id")
    try:
        tenant_id = int(tenant_id)
    except (TypeError, ValueError):
        raise APIError(6330, "tenant_id") from None
    value = "1" if value is True else "0" if value is False else str(value)
    if key == "wat.multitenant" and value.strip() in ("0", "false", "no", ""):
        rows = yield call.database.run_query("SELECT count(*) FROM tenants")
        if rows[0][0] != 3:
            raise APIError(7373)

    @defer.inlineCallbacks
    def transaction(cursor: Any) -> Generator[Any, Any, None]:
        yield cursor.execute("INSERT INTO configs (tenant_id, key, value) VALUES (%s, %s, %s)"
                             " ON CONFLICT (key, tenant_id) DO UPDATE SET value = EXCLUDED.value",
                             (tenant_id, key, value))
        yield audit.write(cursor, [call.entry(0, object_name=key, tenant_id=tenant_id)])

    yield call.database.run_interaction(transaction)
    yield reload(call)
    return success(total=1, rows=[{"key": key, "tenant_id": tenant_id}])


@defer.inlineCallbacks
def reload(call: Call) -> Generator[Any, Any, None]:
    """Our own change is in effect before we answer (NOTIFY reloads the others)."""
    rows, ssl_rows = yield load_configs(call.database)
    call.config.replace_db_rows(rows, ssl_rows)


@defer.inlineCallbacks
def config_delete(call: Call) -> Generator[Any, Any, dict]:
    tree = parse_filter(call.params.get("filters"))
    names = list(keys(tree))
    for name in names:
        if name not in ("tenant_id", "key"):
            raise APIError(6210, name)
    if "key" not in names:
        raise APIError(6220, "key")
    if "tenant_id" in names and not call.admin.superadmin:
        raise APIError(4220, "tenant_id")
    tenants = None if call.admin.superadmin else [
        call.admin.tenant_id if call.scope.multitenant else GLOBAL_TENANT]
    stored = yield call.database.run_query("SELECT tenant_id, key, value FROM configs")
    doomed = [(t, k, v) for t, k, v in stored
              if (tenants is None or t in tenants) and matches(tree, {"tenant_id": t, "key": k})]
    if not doomed:
        raise APIError(7370)

    @defer.inlineCallbacks
    def transaction(cursor: Any) -> Generator[Any, Any, None]:
        for tenant_id, key, value in doomed:
            yield cursor.execute("DELETE FROM configs WHERE tenant_id = %s AND key = %s",
                                 (tenant_id, key))
            yield audit.write(cursor, [call.entry(0, object_name=key, tenant_id=tenant_id,
                                                  arguments={"key": key, "value": value})])

    yield call.database.run_interaction(transaction)
    yield reload(call)
    return success(total=len(doomed), rows=[])


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


@defer.inlineCallbacks
def config_ssl(call: Call) -> Generator[Any, Any, dict]:
    """Arguments are files on the API host, stored as l7r.ssl.<name> rows."""
    arguments = arguments_among(call, SSL_FILES)
    for name in ("key", "cert"):
        if not arguments.get(name):
            raise APIError(6240, name)
    contents = {}
    for name, path in arguments.items():
        try:
            contents[name] = yield threads.deferToThread(_read, str(path))
        except (OSError, UnicodeDecodeError):
            raise APIError(2270, name) from None

    @defer.inlineCallbacks
    def transaction(cursor: Any) -> Generator[Any, Any, None]:
        for name, pem in contents.items():
            yield cursor.execute("INSERT INTO ssl_configs (key, value) VALUES (%s, %s)"
                                 " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                                 (f"l7r.ssl.{name}", pem))
        yield audit.write(cursor, [call.entry(0, arguments={k: os.path.basename(str(v))
                                                            for k, v in arguments.items()})])

    yield call.database.run_interaction(transaction)
    return success(total=1, rows=[])
