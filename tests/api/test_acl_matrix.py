"""Who may do what: administrators × actions × objects of their own tenant and of
another, each answered as QVD 4 does (and as our fixes say: protocols/api.md).

The administrators: ``superadmin``; ``builtin``, a tenant admin with the
built-in roles "Users Manager" and "VMs Reader"; ``custom``, a tenant admin
whose role (of its tenant) inherits "VMs Manager" and denies ``vm.delete.``
and ``vm.see.mac``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from tests.support.api import RunningAPI, Session


@dataclass
class World:
    sessions: dict[str, Session]
    ids: dict[str, int]


@pytest.fixture(scope="module")
def world(api: RunningAPI, superadmin: Session) -> World:
    ids: dict[str, int] = {}
    for tenant in ("acme", "other"):
        t = ids[tenant] = superadmin.ok("tenant_create", arguments={"name": tenant})["rows"][0]["id"]
        ids[f"{tenant}_user"] = superadmin.ok("user_create", arguments={
            "tenant_id": t, "name": f"{tenant}-user", "password": "x"})["rows"][0]["id"]
        ids[f"{tenant}_osf"] = superadmin.ok("osf_create", arguments={
            "tenant_id": t, "name": "osf"})["rows"][0]["id"]
        ids[f"{tenant}_vm"] = superadmin.ok("vm_create", arguments={
            "name": "vm", "user_id": ids[f"{tenant}_user"],
            "osf_id": ids[f"{tenant}_osf"]})["rows"][0]["id"]
    superadmin.ok("administrator_create", arguments={
        "tenant_id": ids["acme"], "name": "builtin", "password": "pw",
        "__roles__": ["Users Manager", "VMs Reader"]})
    role = superadmin.ok("role_create", arguments={
        "tenant_id": ids["acme"], "name": "Desk Ops", "__roles__": ["VMs Manager"]})["rows"][0]["id"]
    superadmin.ok("role_update", filters={"id": role}, arguments={
        "__acls_changes__": {"unassign_acls": ["vm.delete.", "vm.see.mac"]}})
    superadmin.ok("administrator_create", arguments={
        "tenant_id": ids["acme"], "name": "custom", "password": "pw", "__roles__": [role]})
    sessions = {"superadmin": superadmin, "builtin": api.login("builtin", "pw", "acme"),
                "custom": api.login("custom", "pw", "acme")}
    return World(sessions, ids)


def listed(total: int) -> Callable[[dict], bool]:
    return lambda answer: answer["status"] == 0 and answer["total"] == total


def status(code: int) -> Callable[[dict], bool]:
    return lambda answer: answer["status"] == code


def failed_with(code: int) -> Callable[[dict], bool]:
    return lambda answer: answer["status"] == 1200 and all(
        f["status"] == code for f in answer["failures"].values())


# (administrator, action, keys with {own}/{other} placeholders, expectation)
OWN, OTHER = "acme", "other"
CASES: list[tuple[str, str, str, dict, Callable[[dict], bool]]] = []
for who, see_other, update, delete in (
        ("superadmin", 1, status(0), status(0)),
        ("builtin", 0, status(4210), status(4210)),
        ("custom", 0, status(0), status(4210))):
    for tenant in (OWN, OTHER):
        mine = tenant == OWN
        CASES += [
            (who, "vm_get_list", tenant, {"filters": {"id": "{vm}"}},
             listed(1 if mine or see_other else 0)),
            (who, "vm_update", tenant, {"filters": {"id": "{vm}"},
                                        "arguments": {"description": who}},
             # allowed, but another tenant's VM is outside a tenant admin's selection
             update if mine or who != "custom" else status(1300)),
            (who, "user_get_list", tenant, {"filters": {"id": "{user}"}},
             status(4210) if who == "custom" else listed(1 if mine or see_other else 0)),
            (who, "vm_get_list", tenant, {"filters": {"tenant_id": "{tenant}"}},
             status(0) if who == "superadmin" else status(4220)),
        ]
    CASES += [
        (who, "vm_delete", OWN, {"filters": {"id": -1}},
         status(1300) if who == "superadmin" else delete),
        (who, "host_create", OWN, {"arguments": {"name": f"h-{who}", "address": f"10.8.0.{len(who)}"}},
         status(0) if who == "superadmin" else status(4210)),
        (who, "tenant_get_list", OWN, {}, status(0) if who == "superadmin" else status(4210)),
        # QVD 4 closed every log ACL; here "<object>.see.log" opens the log (of one's tenant)
        (who, "log_get_list", OWN, {"block": 1}, status(0)),
        (who, "config_get", OWN, {}, status(0) if who == "superadmin" else status(4210)),
        (who, "role_get_list", OWN, {"filters": {"name": "Desk Ops"}},
         listed(1) if who == "superadmin" else status(4210)),
    ]
CASES += [
    ("builtin", "user_update", OTHER, {"filters": {"id": "{user}"},
                                       "arguments": {"description": "x"}}, status(1300)),
    ("builtin", "user_update", OWN, {"filters": {"id": "{user}"},
                                     "arguments": {"description": "x"}}, status(0)),
    ("builtin", "vm_get_list", OWN, {"filters": {"id": "{vm}"}, "fields": ["mac"]}, status(0)),
    ("custom", "vm_get_list", OWN, {"filters": {"id": "{vm}"}, "fields": ["mac"]}, status(4250)),
    ("custom", "vm_get_list", OWN, {"order_by": {"field": "ip"}}, status(0)),
    ("custom", "vm_start", OTHER, {"filters": {"id": "{vm}"}}, status(1300)),
    ("custom", "vm_start", OWN, {"filters": {"id": "{vm}"}}, failed_with(5140)),
    ("custom", "host_update", OWN, {"filters": {"id": 1}, "arguments": {"name": "x"}}, status(4210)),
]


def _fill(value: Any, ids: dict[str, int], tenant: str) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids, tenant) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        key = value[1:-1]
        return ids[tenant] if key == "tenant" else ids[f"{tenant}_{key}"]
    return value


@pytest.mark.parametrize("who, action, tenant, keys, expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_matrix(world: World, who: str, action: str, tenant: str, keys: dict,
                expected: Callable[[dict], bool]) -> None:
    answer = world.sessions[who].call(action, **_fill(keys, world.ids, tenant))
    assert expected(answer), answer


def test_tenant_admin_creates_in_its_own_tenant(world: World, api: RunningAPI) -> None:
    answer = world.sessions["builtin"].ok("user_create", arguments={
        "tenant_id": world.ids["other"], "name": "sneaky", "password": "x"})
    new_id = answer["rows"][0]["id"]
    assert api.db.query("SELECT tenant_id FROM users WHERE id = %s", (new_id,)) == [
        (world.ids["acme"],)]


def test_effective_acls_follow_a_role_change_at_once(world: World, superadmin: Session) -> None:
    custom = world.sessions["custom"]
    assert custom.call("vm_get_list", fields=["mac"], block=1)["status"] == 4250
    role = superadmin.ok("role_get_list", filters={"name": "Desk Ops"})["rows"][0]["id"]
    superadmin.ok("role_update", filters={"id": role},
                  arguments={"__acls_changes__": {"assign_acls": ["vm.see.mac"]}})
    assert custom.call("vm_get_list", fields=["mac"], block=1)["status"] == 0


def test_tenant_admins_read_only_their_tenants_log(world: World) -> None:
    rows = world.sessions["builtin"].ok("log_get_list", fields=["tenant_id"])["rows"]
    assert rows and {r["tenant_id"] for r in rows} == {world.ids["acme"]}
