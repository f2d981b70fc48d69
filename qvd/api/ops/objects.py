"""Users, hosts, OSFs and tenants: create, update and delete."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from qvd.api.call import Call
from qvd.api.errors import APIError
from qvd.api.model import HOST, OSF, TENANT, USER
from qvd.api.ops.changes import (
    PROPERTY_NESTED, Arg, Column, Insert, Spec, Target, apply_nested, convert, create_handler,
    creation_properties, delete_handler, insert_row, nested_property_acls, update_handler,
)


def _properties(call: Call, cursor: Any, spec: Spec, target: Target,
                items: list) -> defer.Deferred[None]:
    return apply_nested(items, {"__properties__": creation_properties(call, cursor, spec.model,
                                                                      target)})


def real_tenant(call: Call, values: dict) -> int:
    """The tenant_id argument of a new user or OSF: a real tenant (not -1 or 0)."""
    tenant_id = convert(call, "tenant_id", values["tenant_id"], "int")
    if tenant_id in (-1, 0):
        raise APIError(7110, "tenant_id")
    return tenant_id


def _tenant_owned_insert(spec: Spec, table: str, columns: tuple[Column, ...]) -> Insert:
    """The insert of a user or an OSF: a row in a real tenant, then its properties."""

    @defer.inlineCallbacks
    def insert(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
        tenant_id = real_tenant(call, values)
        new_id = yield insert_row(call, cursor, table, values, columns,
                                  given={"tenant_id": tenant_id})
        yield _properties(call, cursor, spec, Target(new_id, None, tenant_id), items)
        return new_id

    return insert


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
    nested_acls=nested_property_acls("user"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED,
    tenant_owned=True, properties=True,
)
USER_COLUMNS = (Column("login", "name", "name"), Column("password", "password", "password"),
                Column("blocked", "blocked", "bool"), Column("description", "description"))


user_create = create_handler(USER_SPEC, _tenant_owned_insert(USER_SPEC, "users", USER_COLUMNS))
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
    nested_acls=nested_property_acls("host"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED, properties=True,
)
HOST_COLUMNS = (Column("name", "name"), Column("address", "address", "address"),
                Column("frontend", "frontend", "bool"), Column("backend", "backend", "bool"),
                Column("description", "description"))


@defer.inlineCallbacks
def _insert_host(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    host_id = yield insert_row(call, cursor, "hosts", values, HOST_COLUMNS)
    yield cursor.execute("INSERT INTO host_runtimes (host_id, state, blocked)"
                         " VALUES (%s, 'stopped', %s)",
                         (host_id, convert(call, "blocked", values["blocked"], "bool")))
    yield cursor.execute("INSERT INTO host_counters (host_id) VALUES (%s)", (host_id,))
    yield _properties(call, cursor, HOST_SPEC, Target(host_id, None, None), items)
    return host_id


host_create = create_handler(HOST_SPEC, _insert_host)


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
    nested_acls=nested_property_acls("osf"),
    create_nested=("__properties__",), update_nested=PROPERTY_NESTED,
    tenant_owned=True, properties=True,
)
OSF_COLUMNS = (Column("name", "name"), Column("memory", "memory", "int"),
               Column("use_overlay", "overlay", "bool"),
               Column("user_storage_size", "user_storage", "int"),
               Column("description", "description"), Column("osd_id", "osd_id", "int"))


osf_create = create_handler(OSF_SPEC, _tenant_owned_insert(OSF_SPEC, "osfs", OSF_COLUMNS))
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
TENANT_COLUMNS = (Column("name", "name", "name"), Column("description", "description"),
                  Column("blocked", "blocked", "bool", missing=False))


@defer.inlineCallbacks
def _insert_tenant(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    tenant_id = yield insert_row(call, cursor, "tenants", values, TENANT_COLUMNS)
    yield cursor.execute("INSERT INTO wat_setups_by_tenants (tenant_id, language, block)"
                         " VALUES (%s, %s, %s)",
                         (tenant_id, convert(call, "language", values["language"], "language"),
                          convert(call, "block", values["block"], "block")))
    return tenant_id


tenant_create = create_handler(TENANT_SPEC, _insert_tenant)


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
