"""``qvd_objects_statistics`` (the WAT's dashboard) and ``dis_in_staging``.

Beside QVD 4's keys, the statistics carry ``vms_by_state`` and ``hosts_by_state``
(``{state: count}``) for whoever may see the running counts."""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import defer, threads

from qvd.api.call import Call
from qvd.api.errors import APIError, success
from qvd.api.query import remaining

# key: (ACL pattern, SQL with %(scope)s for the tenant condition of users u / osfs o)
COUNTS = {
    "users_count": (r"^user\.stats", "SELECT count(*) FROM users u WHERE {u}"),
    "blocked_users_count": (r"^user\.stats\.blocked$",
                            "SELECT count(*) FROM users u WHERE u.blocked AND {u}"),
    "connected_users_count": (
        r"^user\.stats\.connected-users$",
        "SELECT count(DISTINCT u.id) FROM users u JOIN vms v ON v.user_id = u.id"
        " JOIN vm_runtimes vr ON vr.vm_id = v.id WHERE vr.user_state = 'connected' AND {u}"),
    "vms_count": (r"^vm\.stats", "SELECT count(*) FROM vms v JOIN users u ON u.id = v.user_id"
                                 " WHERE {u}"),
    "blocked_vms_count": (r"^vm\.stats\.blocked$",
                          "SELECT count(*) FROM vms v JOIN users u ON u.id = v.user_id"
                          " JOIN vm_runtimes vr ON vr.vm_id = v.id WHERE vr.blocked AND {u}"),
    "running_vms_count": (r"^vm\.stats\.running-vms$",
                          "SELECT count(*) FROM vms v JOIN users u ON u.id = v.user_id JOIN"
                          " vm_runtimes vr ON vr.vm_id = v.id WHERE vr.vm_state = 'running'"
                          " AND {u}"),
    "hosts_count": (r"^host\.stats", "SELECT count(*) FROM hosts"),
    "blocked_hosts_count": (r"^host\.stats\.blocked$",
                            "SELECT count(*) FROM host_runtimes WHERE blocked"),
    "running_hosts_count": (r"^host\.stats\.running-hosts$",
                            "SELECT count(*) FROM host_runtimes WHERE state = 'running'"),
    "osfs_count": (r"^osf\.stats", "SELECT count(*) FROM osfs o WHERE {o}"),
    "dis_count": (r"^di\.stats", "SELECT count(*) FROM dis d JOIN osfs o ON o.id = d.osf_id"
                                 " WHERE {o}"),
    "blocked_dis_count": (r"^di\.stats\.blocked$",
                          "SELECT count(*) FROM dis d JOIN osfs o ON o.id = d.osf_id"
                          " WHERE d.blocked AND {o}"),
}
# ours: how many VMs and hosts are in each state (the console's dashboard)
BY_STATE = {
    "vms_by_state": (r"^vm\.stats\.running-vms$",
                     "SELECT vr.vm_state, count(*) FROM vms v JOIN users u ON u.id = v.user_id"
                     " JOIN vm_runtimes vr ON vr.vm_id = v.id WHERE {u} GROUP BY vr.vm_state"),
    "hosts_by_state": (r"^host\.stats\.running-hosts$",
                       "SELECT state, count(*) FROM host_runtimes GROUP BY state"),
}
EXPIRING = ("SELECT v.name, v.id, vr.vm_expiration_hard FROM vms v JOIN users u ON u.id = v.user_id"
            " JOIN vm_runtimes vr ON vr.vm_id = v.id WHERE vr.vm_expiration_hard > LOCALTIMESTAMP"
            " AND {u} ORDER BY vr.vm_expiration_hard LIMIT 20")
TOP_HOSTS = ("SELECT h.name, h.id, count(vr.vm_id) AS n FROM hosts h JOIN vm_runtimes vr"
             " ON vr.host_id = h.id AND vr.vm_state = 'running' GROUP BY h.id, h.name"
             " ORDER BY n DESC, h.id LIMIT 6")


@defer.inlineCallbacks
def statistics(call: Call) -> Generator[Any, Any, dict]:
    """Only the keys the administrator's ACLs allow, each in its tenant scope."""
    if call.admin.superadmin:
        scope = {"u": "TRUE", "o": "TRUE"}
    else:
        tenant = int(call.admin.tenant_id)
        scope = {"u": f"u.tenant_id = {tenant}", "o": f"o.tenant_id = {tenant}"}
    result: dict[str, Any] = {}
    for key, (acl, sql) in COUNTS.items():
        if call.permissions.allows([acl]):
            rows = yield call.database.run_query(sql.format(**scope))
            result[key] = rows[0][0]
    for key, (acl, sql) in BY_STATE.items():
        if call.permissions.allows([acl]):
            rows = yield call.database.run_query(sql.format(**scope))
            result[key] = {state: count for state, count in rows}
    if call.permissions.allows([r"^vm\.stats\.close-to-expire$"]):
        rows = yield call.database.run_query(EXPIRING.format(**scope) + "")
        now_rows = yield call.database.run_query("SELECT LOCALTIMESTAMP")
        result["vms_with_expiration_date"] = [
            {"name": n, "id": i, "expiration": e.strftime("%Y-%m-%d %H:%M:%S"),
             "remaining_time": remaining(e, now_rows[0][0])} for n, i, e in rows]
    if call.permissions.allows([r"^host\.stats\.top-hosts-most-vms$"]):
        rows = yield call.database.run_query(TOP_HOSTS)
        result["top_populated_hosts"] = [{"name": n, "id": i, "number_of_vms": c}
                                         for n, i, c in rows]
    return success(**result)


def _staging(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))


@defer.inlineCallbacks
def dis_in_staging(call: Call) -> Generator[Any, Any, dict]:
    try:
        names = yield threads.deferToThread(_staging, call.config.get("path.storage.staging"))
    except OSError:
        raise APIError(2230) from None
    return success(total=len(names), rows=[{"name": n} for n in names])
