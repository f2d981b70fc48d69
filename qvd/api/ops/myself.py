"""The caller's own settings: ``current_admin_setup`` (the WAT's and qa4's login
answer), ``myadmin_update``, ``mytenant_update`` and ``config_wat_*``.

Beside QVD 4's keys, ``current_admin_setup`` answers ``allowed_actions``: the
actions this administrator may call, decided here by the same check ``/api``
applies, so that a console hides what would be refused without a copy of
the action table's ACL patterns."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from qvd.api.call import Call
from qvd.api.dispatch import allowed
from qvd.api.errors import APIError, success

VIEWS = (
    "SELECT tenant_id, administrator_id, field, visible, CAST(view_type AS text),"
    " CAST(device_type AS text), CAST(qvd_object AS text), property"
    " FROM operative_views_in_administrators WHERE tenant_id = %s"
    " AND (administrator_id IS NULL OR administrator_id = %s) ORDER BY field"
)
TENANT_SETUP = ("SELECT COALESCE(CAST(language AS text), 'auto'), COALESCE(block, 10)"
                " FROM wat_setups_by_tenants WHERE tenant_id = %s")


@defer.inlineCallbacks
def current_admin_setup(call: Call) -> Generator[Any, Any, dict]:
    admin = call.admin
    tenant = yield call.database.run_query(TENANT_SETUP, (admin.tenant_id,))
    views = yield call.database.run_query(VIEWS, (admin.tenant_id, admin.id))
    language, block = tenant[0] if tenant else ("auto", 10)
    return success(
        admin_id=admin.id, admin_name=admin.name, tenant_id=admin.tenant_id,
        tenant_name=admin.tenant_name, admin_language=admin.language,
        tenant_language=language, admin_block=admin.block, tenant_block=block,
        acls=sorted(call.permissions.names),
        allowed_actions=sorted(name for name, action in call.api.actions.items()
                               if allowed(action, admin, call.permissions)),
        views=[{"tenant_id": t, "administrator_id": a, "field": f, "visible": int(bool(v)),
                "view_type": vt, "device_type": dt, "qvd_object": o, "property": p}
               for t, a, f, v, vt, dt, o, p in views])


@defer.inlineCallbacks
def config_wat_get_list(call: Call) -> Generator[Any, Any, dict]:
    rows = yield call.database.run_query(TENANT_SETUP, (call.admin.tenant_id,))
    language, block = rows[0] if rows else ("auto", 10)
    fields = call.params.get("fields") or ["block", "language"]
    row = {k: v for k, v in (("block", block), ("language", language)) if k in fields}
    return success(total=1, rows=[row])


def language(value: Any) -> str:
    if value not in ("es", "en", "auto", "default"):
        raise APIError(6330, "language")
    return value


def block(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise APIError(6330, "block") from None
    if number < 1:
        raise APIError(6330, "block")
    return number
