"""Users, hosts, OSFs and tenants: create, update and delete."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from qvd.api.call import Call
from qvd.api.errors import APIError
from qvd.api.model import HOST, OSF, TENANT, USER
from qvd.api.ops.changes import (
    Arg, Spec, Target, convert, create, delete_handler, set_properties, update_handler,
)


@defer.inlineCallbacks
def _properties(call: Call, cursor: Any, spec: Spec, target: Target,
                items: list) -> Generator[Any, Any, None]:
    for name, value in items:
        if name == "__properties__":
            if not isinstance(value, dict):
                raise APIError(6231, name)
            yield set_properties(call, cursor, spec.model, target, value)


def _nested_properties(model_object: str) -> dict[str, str]:
    return {"__properties_changes__set": rf"^{model_object}\.update\.properties$",
            "__properties_changes__delete": rf"^{model_object}\.update\.properties$",
            "__properties__": rf"^{model_object}\.create\.properties$"}


PROPERTY_NESTED = ("__properties_changes__set", "__properties_changes__delete")


def real_tenant(call: Call, values: dict) -> int:
    """The tenant_id argument of a new user or OSF: a real tenant (not -1 or 0)."""
    tenant_id = convert(call, "tenant_id", values["tenant_id"], "int")
    if tenant_id in (-1, 0):
        raise APIError(7110, "tenant_id")
    return tenant_id


# -- users ---------------------------------------------------------------------------------

USER_SPEC = Spec(
    model=USER,
    update={"name": Arg("users", "id", "login", "name"),
            "password": Arg("users", "id", "password", "password"),
            "blocked": Arg("users", "id", "blocked", "bool"),
            "description": Arg("users", "id", "description")},
    mandatory=("tenant_id", "name", "password", "blocked"),
    optional=("description",),
    defaults={"blocked": "0"},
    nested_acls=_nested_properties("user"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED,
    tenant_owned=True, properties=True,
)


@defer.inlineCallbacks
def _insert_user(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = real_tenant(call, values)
    yield cursor.execute(
        "INSERT INTO users (tenant_id, login, password, blocked, description)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (tenant_id, convert(call, "name", values["name"], "name", tenant_id),
         convert(call, "password", values["password"], "password"),
         convert(call, "blocked", values["blocked"], "bool"),
         convert(call, "description", values.get("description"), "str")))
    user_id = cursor.fetchone()[0]
    yield _properties(call, cursor, USER_SPEC, Target(user_id, None, tenant_id), items)
    return user_id


def user_create(call: Call) -> defer.Deferred[dict]:
    return create(call, USER_SPEC, lambda c, v, i: _insert_user(call, c, v, i),
                  lambda v: v.get("name"))


user_update = update_handler(USER_SPEC)
user_delete = delete_handler(USER)

# -- hosts ---------------------------------------------------------------------------------

HOST_SPEC = Spec(
    model=HOST,
    update={"name": Arg("hosts", "id", "name"),
            "address": Arg("hosts", "id", "address", "address"),
            "blocked": Arg("host_runtimes", "host_id", "blocked", "bool"),
            "description": Arg("hosts", "id", "description")},
    mandatory=("name", "address", "frontend", "backend", "blocked"),
    optional=("description",),
    defaults={"frontend": "1", "backend": "1", "blocked": "0"},
    nested_acls=_nested_properties("host"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED, properties=True,
)


@defer.inlineCallbacks
def _insert_host(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    yield cursor.execute(
        "INSERT INTO hosts (name, address, frontend, backend, description)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (convert(call, "name", values["name"], "str"),
         convert(call, "address", values["address"], "address"),
         convert(call, "frontend", values["frontend"], "bool"),
         convert(call, "backend", values["backend"], "bool"),
         convert(call, "description", values.get("description"), "str")))
    host_id = cursor.fetchone()[0]
    yield cursor.execute("INSERT INTO host_runtimes (host_id, state, blocked)"
                         " VALUES (%s, 'stopped', %s)",
                         (host_id, convert(call, "blocked", values["blocked"], "bool")))
    yield cursor.execute("INSERT INTO host_counters (host_id) VALUES (%s)", (host_id,))
    yield _properties(call, cursor, HOST_SPEC, Target(host_id, None, None), items)
    return host_id


def host_create(call: Call) -> defer.Deferred[dict]:
    return create(call, HOST_SPEC, lambda c, v, i: _insert_host(call, c, v, i),
                  lambda v: v.get("name"))


@defer.inlineCallbacks
def _host_stopped(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    yield cursor.execute("SELECT state FROM host_runtimes WHERE host_id = %s", (target.id,))
    row = cursor.fetchone()
    if row and row[0] == "running":
        raise APIError(7321)


host_update = update_handler(HOST_SPEC)
host_delete = delete_handler(HOST, check=_host_stopped)

# -- OSFs ----------------------------------------------------------------------------------

OSF_SPEC = Spec(
    model=OSF,
    update={"name": Arg("osfs", "id", "name"),
            "memory": Arg("osfs", "id", "memory", "int"),
            "user_storage": Arg("osfs", "id", "user_storage_size", "int"),
            "overlay": Arg("osfs", "id", "use_overlay", "bool"),
            "description": Arg("osfs", "id", "description"),
            "osd_id": Arg("osfs", "id", "osd_id", "int")},
    mandatory=("tenant_id", "name", "memory", "overlay", "user_storage"),
    optional=("description", "osd_id"),
    defaults={"memory": lambda call: call.config.get("osf.default.memory"),
              "overlay": lambda call: call.config.get("osf.default.overlay"),
              "user_storage": "0"},
    create_acls={"memory": r"^osf\.create\.memory$",
                 "user_storage": r"^osf\.create\.user-storage$"},
    nested_acls=_nested_properties("osf"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED,
    tenant_owned=True, properties=True,
)


@defer.inlineCallbacks
def _insert_osf(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = real_tenant(call, values)
    yield cursor.execute(
        "INSERT INTO osfs (tenant_id, name, memory, use_overlay, user_storage_size, description,"
        " osd_id) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (tenant_id, convert(call, "name", values["name"], "str"),
         convert(call, "memory", values["memory"], "int"),
         convert(call, "overlay", values["overlay"], "bool"),
         convert(call, "user_storage", values["user_storage"], "int"),
         convert(call, "description", values.get("description"), "str"),
         convert(call, "osd_id", values.get("osd_id"), "int")))
    osf_id = cursor.fetchone()[0]
    yield _properties(call, cursor, OSF_SPEC, Target(osf_id, None, tenant_id), items)
    return osf_id


def osf_create(call: Call) -> defer.Deferred[dict]:
    return create(call, OSF_SPEC, lambda c, v, i: _insert_osf(call, c, v, i),
                  lambda v: v.get("name"))


osf_update = update_handler(OSF_SPEC)
osf_delete = delete_handler(OSF)

# -- tenants -------------------------------------------------------------------------------

TENANT_SPEC = Spec(
    model=TENANT,
    update={"name": Arg("tenants", "id", "name", "name"),
            "description": Arg("tenants", "id", "description"),
            "blocked": Arg("tenants", "id", "blocked", "bool"),
            "language": Arg("wat_setups_by_tenants", "tenant_id", "language", "language"),
            "block": Arg("wat_setups_by_tenants", "tenant_id", "block", "block")},
    mandatory=("name", "language", "block"),
    optional=("description", "blocked"),
    defaults={"language": "auto", "block": "10"},
)
MYTENANT_SPEC = Spec(model=TENANT, update={k: v for k, v in TENANT_SPEC.update.items()
                                          if k != "blocked"})


@defer.inlineCallbacks
def _insert_tenant(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    yield cursor.execute(
        "INSERT INTO tenants (name, description, blocked) VALUES (%s, %s, %s) RETURNING id",
        (convert(call, "name", values["name"], "name"),
         convert(call, "description", values.get("description"), "str"),
         convert(call, "blocked", values.get("blocked", "0"), "bool") or False))
    tenant_id = cursor.fetchone()[0]
    yield cursor.execute("INSERT INTO wat_setups_by_tenants (tenant_id, language, block)"
                         " VALUES (%s, %s, %s)",
                         (tenant_id, convert(call, "language", values["language"], "language"),
                          convert(call, "block", values["block"], "block")))
    return tenant_id


def tenant_create(call: Call) -> defer.Deferred[dict]:
    return create(call, TENANT_SPEC, lambda c, v, i: _insert_tenant(call, c, v, i),
                  lambda v: v.get("name"))


def _wat_setup(call: Call, cursor: Any, target: Target) -> defer.Deferred[Any]:
    return cursor.execute("INSERT INTO wat_setups_by_tenants (tenant_id) VALUES (%s)"
                          " ON CONFLICT (tenant_id) DO NOTHING", (target.id,))


@defer.inlineCallbacks
def _not_core_tenant(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    if target.id in (-1, 0):
        raise APIError(7120)
    yield defer.succeed(None)


tenant_update = update_handler(TENANT_SPEC, check=_wat_setup)
tenant_delete = delete_handler(TENANT, check=_not_core_tenant)


def mytenant_update(call: Call) -> defer.Deferred[dict]:
    call.params["filters"] = {"id": call.admin.tenant_id}
    return update_handler(MYTENANT_SPEC, check=_wat_setup)(call)
