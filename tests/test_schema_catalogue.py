"""Independent check of the deployed QVD-DB schema against the reference (§1).

The expected catalogue below was written from
``/work/shared/reference/qvd4-db-auth-lb.md`` §1.1–§1.6, not from
``qvd/db/schema.sql``; the tests read ``pg_catalog`` of a deployed database
and report every difference as ``table.column: expected X, found Y``.

Conventions of the reference (SQL::Translator naming): foreign keys
``<table>_fk_<col>``, their plain indexes ``<table>_idx_<col>`` (none when the
FK column is the whole primary key: SQLT never duplicates the PK index, cf. the
explicit vm_runtimes index list), unique constraints ``<table>_<col1>_<col2>``;
every FK is DEFERRABLE INITIALLY IMMEDIATE; ``serial`` = integer NOT NULL with
default ``nextval('<table>_<col>_seq')``.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import psycopg2
import psycopg2.extensions
import pytest

from tests.support.postgres import TestDatabase as Database, drop_database, new_database

# --------------------------------------------------------------------------------------
# The expected catalogue
# --------------------------------------------------------------------------------------

INT = "integer"
BOOL = "boolean"
REAL = "real"
TEXT = "text"
JSON = "json"
TS = "timestamp without time zone"
QVD_OBJECT_ENUM = "administrator_and_tenant_views_setups_qvd_object_enum"
SERIAL = "<serial>"  # default marker: nextval('<table>_<col>_seq'::regclass)
NN = True  # NOT NULL

CASCADE = "CASCADE"
NO_ACTION = "NO ACTION"


def vc(length: int) -> str:
    return f"character varying({length})"


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    not_null: bool = False
    default: Optional[str] = None  # canonical text of the default value, or SERIAL


@dataclass(frozen=True)
class FK:
    column: str
    ref_table: str
    ref_column: str
    on_delete: str = NO_ACTION
    on_update: str = NO_ACTION


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[Col]
    pk: tuple[str, ...]
    unique: list[tuple[str, ...]] = field(default_factory=list)
    fks: list[FK] = field(default_factory=list)

    def unique_constraints(self) -> dict[str, tuple[str, ...]]:
        # PostgreSQL keeps the first 63 characters of a longer identifier
        return {"_".join((self.name,) + cols)[:63]: cols for cols in self.unique}

    def foreign_keys(self) -> dict[str, tuple]:
        return {
            f"{self.name}_fk_{fk.column}": (
                (fk.column,), fk.ref_table, (fk.ref_column,), fk.on_delete, fk.on_update,
                True, False,  # DEFERRABLE, INITIALLY IMMEDIATE
            )
            for fk in self.fks
        }

    def fk_indexes(self) -> dict[str, tuple[str, ...]]:
        return {
            f"{self.name}_idx_{fk.column}": (fk.column,)
            for fk in self.fks
            if (fk.column,) != self.pk
        }


def lookup(name: str, width: int) -> Table:
    return Table(name, [Col("name", vc(width), NN)], pk=("name",))


def properties(table: str, object_column: str, owner: str) -> Table:
    return Table(
        table,
        [Col(object_column, INT, NN), Col("property_id", INT, NN), Col("value", vc(32768), NN)],
        pk=(object_column, "property_id"),
        fks=[
            FK(object_column, owner, "id", CASCADE, CASCADE),
            FK("property_id", "qvd_object_properties_list", "id", on_delete=CASCADE),
        ],
    )


VIEW_TYPE_ENUM = "administrator_and_tenant_views_setups_view_type_enum"
DEVICE_TYPE_ENUM = "administrator_and_tenant_views_setups_device_type_enum"


def views_setups(name: str, owner_column: str, owner: str) -> Table:
    """The WAT's per-tenant or per-administrator column and filter setup."""
    return Table(
        name,
        [
            Col("id", INT, NN, SERIAL),
            Col("field", vc(64), NN),
            Col(owner_column, INT, NN),
            Col("visible", BOOL, NN),
            Col("view_type", VIEW_TYPE_ENUM, NN),
            Col("device_type", DEVICE_TYPE_ENUM, NN),
            Col("qvd_object", QVD_OBJECT_ENUM, NN),
        ],
        pk=("id",),
        unique=[(owner_column, "field", "view_type", "device_type", "qvd_object")],
        fks=[FK(owner_column, owner, "id", CASCADE, CASCADE)],
    )


def counters(name: str, key: str, owner: str, counts: tuple[str, ...]) -> Table:
    """A host's or VM's counters: integers from 0 (the key too), gone with their owner."""
    return Table(name, [Col(column, INT, NN, "0") for column in (key, *counts)], pk=(key,),
                 fks=[FK(key, owner, "id", on_delete=CASCADE)])


def relation(name: str, left: tuple[str, str], right: tuple[str, str],
             extra: Sequence[Col] = (), unique: Optional[tuple[str, str]] = None) -> Table:
    """A many-to-many link: (column, referenced table) twice, each pair once, both
    references cascading, so a link goes with either end."""
    return Table(
        name,
        [Col("id", INT, NN, SERIAL), Col(left[0], INT, NN), Col(right[0], INT, NN), *extra],
        pk=("id",),
        unique=[unique or (left[0], right[0])],
        fks=[FK(column, table, "id", CASCADE, CASCADE) for column, table in (left, right)],
    )


def wat_setups(name: str, owner_column: str, owner: str) -> Table:
    """The WAT's per-tenant or per-administrator block size and language (one row each)."""
    return Table(
        name,
        [
            Col("id", INT, NN, SERIAL),
            Col("block", INT, NN, "10"),
            Col("language", "language_enum", NN, "auto"),
            Col(owner_column, INT, NN),
        ],
        pk=("id",),
        unique=[(owner_column,)],
        fks=[FK(owner_column, owner, "id", CASCADE, CASCADE)],
    )


def property_views(name: str, owner: Optional[tuple[str, str]] = None) -> Table:
    """The WAT's setup of custom-property columns; the tenant's table has no owner column
    (as in QVD 4), the administrator's has (column, referenced table)."""
    owned = [owner] if owner else []
    return Table(
        name,
        [
            Col("id", INT, NN, SERIAL),
            *(Col(column, INT, NN) for column, _ in owned),
            Col("qvd_obj_prop_id", INT, NN),
            Col("visible", BOOL, NN),
            Col("view_type", VIEW_TYPE_ENUM, NN),
            Col("device_type", DEVICE_TYPE_ENUM, NN),
        ],
        pk=("id",),
        unique=[(*(column for column, _ in owned), "qvd_obj_prop_id", "view_type", "device_type")],
        fks=[*(FK(column, table, "id", CASCADE, CASCADE) for column, table in owned),
             FK("qvd_obj_prop_id", "qvd_object_properties_list", "id", CASCADE, CASCADE)],
    )


def log_table(name: str, wat: bool) -> Table:
    return Table(
        name,
        [
            Col("id", INT, NN, SERIAL),
            Col("administrator_id", INT),
            Col("administrator_name", vc(80)),
            Col("tenant_id", INT, wat),
            Col("tenant_name", vc(80), wat),
            Col("action", vc(80), NN),
            Col("type_of_action", vc(80), NN),
            Col("arguments", TEXT),
            Col("qvd_object", QVD_OBJECT_ENUM if wat else vc(80), NN),
            Col("object_id", INT),
            Col("object_name", vc(80)),
            Col("time", TS, NN),
            Col("status", INT, NN),
            Col("source", vc(80)),
            Col("ip", vc(80)),
            Col("superadmin", BOOL),
        ],
        pk=("id",),
    )


EXPECTED_TABLES: dict[str, Table] = {t.name: t for t in [
    Table("tenants", [
        Col("id", INT, NN, SERIAL),
        Col("name", vc(80), NN),
        Col("description", vc(32768)),
        Col("blocked", BOOL, False, "false"),  # nullable (reference: **yes**)
    ], pk=("id",), unique=[("name",)]),
    Table("users", [
        Col("id", INT, NN, SERIAL),
        Col("description", vc(32768)),
        Col("tenant_id", INT, NN),
        Col("login", vc(64), NN),
        Col("blocked", BOOL, NN, "false"),
        Col("password", vc(64)),
        Col("language", "language_enum", NN, "auto"),
    ], pk=("id",), unique=[("login", "tenant_id")],
        fks=[FK("tenant_id", "tenants", "id", on_update=CASCADE)]),
    lookup("user_states", 20),
    lookup("user_cmds", 20),
    Table("hosts", [
        Col("id", INT, NN, SERIAL),
        Col("name", vc(127), NN),
        Col("description", vc(32768)),
        Col("address", vc(127), NN),
        Col("frontend", BOOL, NN),
        Col("backend", BOOL, NN),
    ], pk=("id",), unique=[("name",), ("address",)]),
    Table("host_runtimes", [
        Col("host_id", INT, NN),
        Col("pid", INT),
        Col("ok_ts", TS),
        Col("usable_ram", REAL),
        Col("usable_cpu", REAL),
        Col("state", vc(12), NN),
        Col("blocked", BOOL, NN),
        Col("cmd", vc(12)),
    ], pk=("host_id",), fks=[
        FK("host_id", "hosts", "id", on_delete=CASCADE),
        FK("state", "host_states", "name", CASCADE, CASCADE),
        FK("cmd", "host_cmds", "name", CASCADE, CASCADE),
    ]),
    lookup("host_states", 20),
    lookup("host_cmds", 20),
    counters("host_counters", "host_id", "hosts", ("http_requests", "auth_attempts", "auth_ok",
                                                  "nx_attempts", "nx_ok", "short_sessions")),
    Table("vms", [
        Col("id", INT, NN, SERIAL),
        Col("name", vc(64), NN),
        Col("description", vc(32768)),
        Col("user_id", INT, NN),
        Col("osf_id", INT, NN),
        Col("di_tag", vc(128), NN),
        Col("ip", vc(15)),
        Col("storage", vc(4096)),
    ], pk=("id",), unique=[("ip",), ("name", "user_id")], fks=[
        FK("user_id", "users", "id", on_update=CASCADE),
        FK("osf_id", "osfs", "id", on_update=CASCADE),
    ]),
    Table("vm_runtimes", [
        Col("vm_id", INT, NN),
        Col("host_id", INT),
        Col("current_osf_id", INT),
        Col("current_di_id", INT),
        Col("user_ip", vc(15)),
        Col("real_user_id", INT),
        Col("vm_state", vc(12), NN),
        Col("vm_state_ts", INT),
        Col("vm_cmd", vc(12)),
        Col("vm_pid", INT),
        Col("user_state", vc(12), NN),
        Col("user_state_ts", INT),
        Col("user_cmd", vc(12)),
        Col("vma_ok_ts", INT),
        Col("l7r_host_id", INT),
        Col("l7r_pid", INT),
        Col("vm_address", vc(127)),
        Col("vm_vma_port", INT),
        Col("vm_x_port", INT),
        Col("vm_ssh_port", INT),
        Col("vm_vnc_port", INT),
        Col("vm_mon_port", INT),
        Col("vm_serial_port", INT),
        Col("blocked", BOOL),  # nullable, no default
        Col("vm_expiration_soft", TS),
        Col("vm_expiration_hard", TS),
    ], pk=("vm_id",), fks=[
        FK("vm_id", "vms", "id", on_delete=CASCADE),
        FK("host_id", "hosts", "id", on_update=CASCADE),
        FK("current_osf_id", "osfs", "id"),
        FK("current_di_id", "dis", "id", on_update=CASCADE),
        FK("real_user_id", "users", "id"),
        FK("vm_state", "vm_states", "name", CASCADE, CASCADE),
        FK("vm_cmd", "vm_cmds", "name", CASCADE, CASCADE),
        FK("user_state", "user_states", "name", CASCADE, CASCADE),
        FK("user_cmd", "user_cmds", "name", CASCADE, CASCADE),
        FK("l7r_host_id", "hosts", "id", on_update=CASCADE),
    ]),
    lookup("vm_states", 12),
    lookup("vm_cmds", 20),
    counters("vm_counters", "vm_id", "vms", ("run_attempts", "run_ok")),
    Table("osfs", [
        Col("tenant_id", INT, NN),
        Col("id", INT, NN, SERIAL),
        Col("name", vc(64), NN),
        Col("description", vc(32768)),
        Col("memory", INT, NN),
        Col("use_overlay", BOOL, NN),
        Col("is_application", BOOL, NN, "false"),
        Col("user_storage_size", INT),
        Col("osd_id", INT),
    ], pk=("id",), unique=[("name", "tenant_id")],
        fks=[FK("tenant_id", "tenants", "id", on_update=CASCADE)]),
    Table("dis", [
        Col("id", INT, NN, SERIAL),
        Col("osf_id", INT, NN),
        Col("blocked", BOOL, NN, "false"),
        Col("description", vc(32768)),
        Col("path", vc(4096), NN),
        Col("version", vc(64), NN),
    ], pk=("id",), unique=[("osf_id", "version")],
        fks=[FK("osf_id", "osfs", "id", on_update=CASCADE)]),
    Table("di_tags", [
        Col("id", INT, NN, SERIAL),
        Col("di_id", INT, NN),
        Col("tag", vc(1024), NN),
        Col("fixed", BOOL, NN, "false"),
    ], pk=("id",), fks=[FK("di_id", "dis", "id", CASCADE, CASCADE)]),  # no uniqueness in DB
    Table("di_runtimes", [
        Col("di_id", INT, NN),
        Col("state", "di_generation_state_enum", NN, "new"),
        Col("state_ts", INT),
        Col("elapsed_time", INT),
        Col("auto_publish", INT, NN, "0"),
        Col("foreign_id", INT),
        Col("expiration_time_soft", INT),
        Col("expiration_time_hard", INT),
        Col("percentage", REAL, NN, "0"),
        Col("error_code", INT),
        Col("status_message", TEXT),
    ], pk=("di_id",), fks=[FK("di_id", "dis", "id", on_delete=CASCADE)]),
    Table("configs", [
        Col("tenant_id", INT, NN),
        Col("key", vc(64), NN),
        Col("value", vc(4096), NN),
    ], pk=("tenant_id", "key"),  # both "PK part", in the reference's (and QVD's) order
        fks=[FK("tenant_id", "tenants", "id", on_update=CASCADE)]),
    Table("ssl_configs", [
        Col("key", vc(64), NN),
        Col("value", vc(32768), NN),
    ], pk=("key",)),
    Table("properties_list", [
        Col("id", INT, NN, SERIAL),
        Col("key", vc(1024), NN),
        Col("tenant_id", INT, NN),
        Col("description", vc(1024)),
    ], pk=("id",), unique=[("key", "tenant_id")], fks=[FK("tenant_id", "tenants", "id")]),
    Table("qvd_object_properties_list", [
        Col("id", INT, NN, SERIAL),
        Col("property_id", INT, NN),
        Col("qvd_object", QVD_OBJECT_ENUM, NN),
    ], pk=("id",), unique=[("property_id", "qvd_object")],
        fks=[FK("property_id", "properties_list", "id", CASCADE, CASCADE)]),
    properties("vm_properties", "vm_id", "vms"),
    properties("user_properties", "user_id", "users"),
    properties("osf_properties", "osf_id", "osfs"),
    properties("di_properties", "di_id", "dis"),
    properties("host_properties", "host_id", "hosts"),
    Table("user_tokens", [
        Col("token", vc(256), NN),
        Col("user_id", INT, NN),
        Col("vm_id", INT),
        Col("expiration", INT, NN),
        Col("auth_params_id", INT),
        Col("multi_use", BOOL, NN, "false"),
    ], pk=("token",), fks=[
        FK("user_id", "users", "id", on_delete=CASCADE),
        FK("vm_id", "vms", "id", on_delete=CASCADE),
        FK("auth_params_id", "user_auth_parameters", "id"),
    ]),
    Table("user_auth_parameters", [
        Col("id", INT, NN, SERIAL),
        Col("parameters", JSON, NN),
    ], pk=("id",)),
    Table("versions", [
        Col("component", vc(100), NN),
        Col("version", vc(100), NN),
    ], pk=("component",)),
    log_table("log", wat=False),
    log_table("wat_log", wat=True),
    # administration (API and WAT)
    Table("administrators", [
        Col("tenant_id", INT, NN),
        Col("id", INT, NN, SERIAL),
        Col("name", vc(64), NN),
        Col("description", vc(32768)),
        Col("password", vc(64)),
    ], pk=("id",), unique=[("name", "tenant_id")],
        fks=[FK("tenant_id", "tenants", "id", CASCADE, CASCADE)]),
    Table("roles", [
        Col("id", INT, NN, SERIAL),
        Col("tenant_id", INT, NN),
        Col("name", vc(64), NN),
        Col("description", vc(32768)),
        Col("internal", BOOL, NN, "false"),
        Col("fixed", BOOL, NN, "false"),
    ], pk=("id",), unique=[("name", "tenant_id")],
        fks=[FK("tenant_id", "tenants", "id", CASCADE, CASCADE)]),
    Table("acls", [
        Col("id", INT, NN, SERIAL),
        Col("name", vc(64), NN),
        Col("description", vc(80)),
    ], pk=("id",), unique=[("name",)]),
    relation("acl_role_relations", ("acl_id", "acls"), ("role_id", "roles"),
             extra=[Col("positive", BOOL, NN)], unique=("role_id", "acl_id")),
    relation("role_role_relations", ("inheritor_id", "roles"), ("inherited_id", "roles")),
    relation("role_administrator_relations", ("role_id", "roles"),
             ("administrator_id", "administrators")),
    wat_setups("wat_setups_by_administrators", "administrator_id", "administrators"),
    wat_setups("wat_setups_by_tenants", "tenant_id", "tenants"),
    views_setups("views_setups_attributes_tenant", "tenant_id", "tenants"),
    views_setups("views_setups_attributes_administrator", "administrator_id", "administrators"),
    property_views("views_setups_properties_tenant"),
    property_views("views_setups_properties_administrator", ("administrator_id", "administrators")),
    Table("session", [
        Col("sid", vc(40), NN),
        Col("data", TEXT),
        Col("expires", INT, NN),
    ], pk=("sid",)),
]}

# Indexes we add beyond the reference's: the API looks up each object's creation and
# deletion rows in the log, which grows with every API request.
EXTRA_INDEXES: dict[str, dict[str, tuple[tuple[str, ...], bool]]] = {
    "log": {"log_idx_object": (("qvd_object", "object_id"), False)},
}

EXPECTED_LOOKUP_ROWS: dict[str, set[str]] = {
    "vm_states": {"stopped", "starting", "running", "stopping", "zombie", "debugging"},
    "vm_cmds": {"start", "stop", "busy"},
    "user_states": {"disconnected", "connecting", "connected"},
    "user_cmds": {"abort"},
    "host_states": {"stopped", "starting", "running", "stopping", "lost"},
    "host_cmds": {"stop"},
}

EXPECTED_ENUMS: dict[str, list[str]] = {
    "administrator_and_tenant_views_setups_device_type_enum": ["mobile", "desktop"],
    "administrator_and_tenant_views_setups_qvd_object_enum": [
        "user", "vm", "log", "host", "osf", "di", "role", "administrator", "tenant"],
    "administrator_and_tenant_views_setups_view_type_enum": ["filter", "list_column"],
    "log_qvd_object_enum": [
        "user", "vm", "log", "host", "osf", "di", "role", "administrator", "tenant", "acl",
        "config", "tenant_view", "admin_view"],
    "log_type_of_action_enum": [
        "create", "create_or_update", "delete", "see", "update", "exec", "login"],
    "language_enum": ["es", "en", "auto", "default"],
    "user_portal_parameters_enum": [
        "connection", "audio", "printers", "fullscreen", "share_folders", "share_usb", "client",
        "kb_layout"],
    "di_generation_state_enum": [
        "new", "generating", "fail", "uploading", "upload_stalled", "verifying", "ready",
        "published", "retired"],
}


@dataclass(frozen=True)
class Trigger:
    table: str
    event: str  # INSERT / UPDATE / DELETE
    columns: tuple[str, ...] = ()  # UPDATE OF ...
    function: Optional[str] = None  # only where the reference names it


def _crud(prefix: str, table: str, with_functions: bool = False) -> dict[str, Trigger]:
    def fn(kind: str) -> Optional[str]:
        return f"{prefix}_{kind}_notify" if with_functions else None

    return {
        f"{prefix}_changed_trigger": Trigger(table, "UPDATE", function=fn("changed")),
        f"{prefix}_created_trigger": Trigger(table, "INSERT", function=fn("created")),
        f"{prefix}_deleted_trigger": Trigger(table, "DELETE", function=fn("deleted")),
    }


EXPECTED_TRIGGERS: dict[str, Trigger] = {
    **_crud("config", "configs", with_functions=True),
    **_crud("host", "hosts", with_functions=True),
    "host_runtime_changed_trigger": Trigger(
        "host_runtimes", "UPDATE", ("state",), "host_changed_notify"),
    "host_blocked_or_unblocked_trigger": Trigger("host_runtimes", "UPDATE", ("blocked",)),
    **_crud("user", "users"),
    "user_blocked_or_unblocked_trigger": Trigger("users", "UPDATE", ("blocked",)),
    **_crud("vm", "vms"),
    "vm_blocked_or_unblocked_trigger": Trigger("vm_runtimes", "UPDATE", ("blocked",)),
    "vm_runtime_changed_trigger": Trigger(
        "vm_runtimes", "UPDATE",
        ("vm_state", "user_state", "vm_expiration_soft", "vm_expiration_hard"),
        "vm_runtime_notify"),
    "vm_desktop_changed_trigger": Trigger(
        "vm_runtimes", "UPDATE", ("vm_state", "user_state"), "vm_runtime_desktop_changed_notify"),
    **_crud("osf", "osfs"),
    **_crud("di", "dis"),
    "di_blocked_or_unblocked_trigger": Trigger("dis", "UPDATE", ("blocked",)),
    "di_runtimes_changed_trigger": Trigger("di_runtimes", "UPDATE"),
}

# max(id) + 1 of the tables with initial rows (tenants -1..1, QVD 4's administration data)
SERIAL_TABLES_WITH_INITIAL_ROWS = {
    "tenants": 2, "administrators": 3, "roles": 68, "acls": 332, "acl_role_relations": 251,
    "role_role_relations": 87, "role_administrator_relations": 3,
    "wat_setups_by_administrators": 3, "wat_setups_by_tenants": 2, "log": 3,
}
FIRST_ID = 10000

# --------------------------------------------------------------------------------------
# Fixtures and catalogue readers
# --------------------------------------------------------------------------------------


def _new_deployed_database() -> Iterator[Database]:
    """A new deployed database for a fixture, dropped when the fixture ends."""
    db = new_database()
    try:
        yield db
    finally:
        drop_database(db)


@pytest.fixture(scope="module")
def deployed() -> Iterator[Database]:
    """A pristine deployed database, only read from."""
    yield from _new_deployed_database()


@pytest.fixture
def fresh() -> Iterator[Database]:
    """A deployed database the test may write to."""
    yield from _new_deployed_database()


def report(problems: list[str], what: str) -> str:
    return f"{len(problems)} {what} mismatch(es) against the reference:\n  " + "\n  ".join(problems)


def _columns(db: Database) -> dict[str, list[tuple[str, str, bool, Optional[str]]]]:
    rows = db.query(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum
        """
    )
    result: dict[str, list[tuple[str, str, bool, Optional[str]]]] = {}
    for table, column, type_, not_null, default in rows:
        result.setdefault(table, []).append((column, type_, not_null, default))
    return result


def _canonical_default(cur: Any, table: str, column: str, type_: str,
                       expr: Optional[str]) -> Optional[str]:
    """The default as comparable text: SERIAL for nextval('<table>_<col>_seq'),
    otherwise the value it evaluates to (so '0'::boolean, false and 'f' all read 'false')."""
    if expr is None:
        return None
    if "nextval(" in expr:
        if expr in (f"nextval('{table}_{column}_seq'::regclass)",
                    f"nextval('public.{table}_{column}_seq'::regclass)"):
            return SERIAL
        return expr
    cur.execute(f"SELECT CAST(({expr}) AS {type_})::text")
    return cur.fetchone()[0]


def _constraints(db: Database, kind: str) -> dict[tuple[str, str], tuple]:
    """(table, constraint) -> (columns, ref table, ref columns, on delete, on update,
    deferrable, initially deferred) for constraints of ``kind`` (p, u, f)."""
    rows = db.query(
        """
        SELECT c.relname, k.conname,
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                       JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                      ORDER BY u.i),
               r.relname,
               ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                       JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                      ORDER BY u.i),
               k.confdeltype, k.confupdtype, k.condeferrable, k.condeferred
          FROM pg_constraint k
          JOIN pg_class c ON c.oid = k.conrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_class r ON r.oid = k.confrelid
         WHERE n.nspname = 'public' AND k.contype = %s
        """,
        (kind,),
    )
    actions = {"a": NO_ACTION, "r": "RESTRICT", "c": CASCADE, "n": "SET NULL", "d": "SET DEFAULT"}
    result: dict[tuple[str, str], tuple] = {}
    for table, name, cols, ref, ref_cols, on_delete, on_update, deferrable, deferred in rows:
        if kind == "f":
            result[(table, name)] = (tuple(cols), ref, tuple(ref_cols), actions[on_delete],
                                     actions[on_update], deferrable, deferred)
        else:
            result[(table, name)] = (tuple(cols), deferrable, deferred)
    return result


def _indexes(db: Database) -> dict[tuple[str, str], tuple[tuple[str, ...], bool, bool]]:
    """(table, index) -> (columns, unique, primary)."""
    rows = db.query(
        """
        SELECT t.relname, i.relname,
               ARRAY(SELECT a.attname FROM unnest(x.indkey::int2[]) WITH ORDINALITY u(n, o)
                       JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = u.n
                      ORDER BY u.o),
               x.indisunique, x.indisprimary
          FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid
          JOIN pg_class t ON t.oid = x.indrelid
          JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public'
        """
    )
    return {(t, i): (tuple(cols), uniq, prim) for t, i, cols, uniq, prim in rows}


# --------------------------------------------------------------------------------------
# Structure
# --------------------------------------------------------------------------------------


def test_every_runtime_table_exists(deployed: Database) -> None:
    found = {r[0] for r in deployed.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    missing = sorted(set(EXPECTED_TABLES) - found)
    assert not missing, f"runtime tables missing from the deployed schema: {missing}"


def test_columns_types_nullability_defaults(deployed: Database) -> None:
    found_tables = _columns(deployed)
    problems: list[str] = []
    conn = deployed.connect()
    try:
        with conn, conn.cursor() as cur:
            for table in EXPECTED_TABLES.values():
                found = {c[0]: c for c in found_tables.get(table.name, [])}
                expected_names = [c.name for c in table.columns]
                for col in table.columns:
                    where = f"{table.name}.{col.name}"
                    if col.name not in found:
                        problems.append(f"{where}: expected column {col.type}, found none")
                        continue
                    _, type_, not_null, expr = found[col.name]
                    if type_ != col.type:
                        problems.append(f"{where}: expected type {col.type}, found {type_}")
                    if not_null != col.not_null:
                        problems.append(
                            f"{where}: expected {'NOT NULL' if col.not_null else 'nullable'}, "
                            f"found {'NOT NULL' if not_null else 'nullable'}")
                    default = _canonical_default(cur, table.name, col.name, type_, expr)
                    if default != col.default:
                        problems.append(
                            f"{where}: expected default {col.default!r}, found {default!r}"
                            f" (expression {expr!r})")
                for extra in sorted(set(found) - set(expected_names)):
                    problems.append(f"{table.name}.{extra}: expected no such column, found "
                                    f"{found[extra][1]}")
    finally:
        conn.close()
    assert not problems, report(problems, "column")


def test_column_order_follows_the_reference(deployed: Database) -> None:
    """Column order matters for COPY / positional INSERTs and data files."""
    found_tables = _columns(deployed)
    problems = []
    for table in EXPECTED_TABLES.values():
        expected = [c.name for c in table.columns]
        found = [c[0] for c in found_tables.get(table.name, [])]
        if found and found != expected:
            problems.append(f"{table.name}: expected columns {expected}, found {found}")
    assert not problems, report(problems, "column order")


def test_primary_keys(deployed: Database) -> None:
    found = {t: v[0] for (t, _), v in _constraints(deployed, "p").items()}
    problems = [
        f"{t.name}: expected PRIMARY KEY {t.pk}, found {found.get(t.name)}"
        for t in EXPECTED_TABLES.values() if found.get(t.name) != t.pk
    ]
    assert not problems, report(problems, "primary key")


def differences(table: str, kind: str, legend: str, expected: dict[str, Any],
                actual: dict[str, Any]) -> list[str]:
    """One problem line per constraint or index name whose definition differs (or that
    one side lacks)."""
    return [f"{table}: {kind} {name}: expected {legend}{expected.get(name)}, "
            f"found {actual.get(name)}"
            for name in sorted(set(expected) | set(actual)) if expected.get(name) != actual.get(name)]


def test_unique_constraints(deployed: Database) -> None:
    found: dict[str, dict[str, tuple]] = {}
    for (table, name), (cols, deferrable, _) in _constraints(deployed, "u").items():
        found.setdefault(table, {})[name] = (cols, deferrable)
    problems = []
    for table in EXPECTED_TABLES.values():
        expected = {n: (cols, False) for n, cols in table.unique_constraints().items()}
        problems += differences(table.name, "UNIQUE", "(columns, deferrable)=", expected,
                                found.get(table.name, {}))
    assert not problems, report(problems, "unique constraint")


def test_foreign_keys(deployed: Database) -> None:
    found: dict[str, dict[str, tuple]] = {}
    for (table, name), fk in _constraints(deployed, "f").items():
        found.setdefault(table, {})[name] = fk
    legend = "(columns, ref table, ref columns, ON DELETE, ON UPDATE, deferrable, initially deferred)"
    problems = []
    for table in EXPECTED_TABLES.values():
        problems += differences(table.name, "FK", "", table.foreign_keys(),
                                found.get(table.name, {}))
    assert not problems, report(problems, f"foreign key {legend}")


def test_indexes(deployed: Database) -> None:
    """Exactly: the PK index, one unique index per UNIQUE constraint, and a plain
    ``<table>_idx_<col>`` on every FK column that is not the whole primary key."""
    found: dict[str, dict[str, tuple]] = {}
    for (table, name), (cols, unique, primary) in _indexes(deployed).items():
        if not primary:
            found.setdefault(table, {})[name] = (cols, unique)
    problems = []
    for table in EXPECTED_TABLES.values():
        expected = {n: (c, True) for n, c in table.unique_constraints().items()}
        expected.update({n: (c, False) for n, c in table.fk_indexes().items()})
        expected.update(EXTRA_INDEXES.get(table.name, {}))
        problems += differences(table.name, "index", "(columns, unique)=", expected,
                                found.get(table.name, {}))
    assert not problems, report(problems, "index")


def test_serial_sequences_owned_by_their_columns(deployed: Database) -> None:
    expected = {
        (t.name, c.name): f"public.{t.name}_{c.name}_seq"
        for t in EXPECTED_TABLES.values() for c in t.columns if c.default == SERIAL
    }
    problems = []
    for (table, column), sequence in sorted(expected.items()):
        owned = deployed.query("SELECT pg_get_serial_sequence(%s, %s)", (table, column))[0][0]
        if owned != sequence:
            problems.append(f"{table}.{column}: expected sequence {sequence}, found {owned}")
    found = {r[0] for r in deployed.query(
        "SELECT schemaname || '.' || sequencename FROM pg_sequences WHERE schemaname = 'public'")}
    for extra in sorted(found - set(expected.values())):
        problems.append(f"{extra}: expected no such sequence among the runtime tables' serials")
    assert not problems, report(problems, "sequence")


def test_sequences_start_at_10000_or_after_initial_rows(fresh: Database) -> None:
    problems = []
    for table in EXPECTED_TABLES.values():
        for col in table.columns:
            if col.default != SERIAL:
                continue
            expected = SERIAL_TABLES_WITH_INITIAL_ROWS.get(table.name, FIRST_ID)
            got = fresh.query("SELECT nextval(%s)", (f"{table.name}_{col.name}_seq",))[0][0]
            if got != expected:
                problems.append(f"{table.name}.{col.name}: expected next id {expected}, found {got}")
    assert not problems, report(problems, "sequence start")


def test_enum_types_and_labels_in_order(deployed: Database) -> None:
    rows = deployed.query(
        """
        SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
          FROM pg_type t
          JOIN pg_namespace n ON n.oid = t.typnamespace
          JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE n.nspname = 'public'
         GROUP BY t.typname
        """
    )
    found = {name: list(labels) for name, labels in rows}
    problems = [
        f"enum {name}: expected {EXPECTED_ENUMS.get(name)}, found {found.get(name)}"
        for name in sorted(set(EXPECTED_ENUMS) | set(found))
        if EXPECTED_ENUMS.get(name) != found.get(name)
    ]
    assert not problems, report(problems, "enum type")


# --------------------------------------------------------------------------------------
# Initial rows and database settings
# --------------------------------------------------------------------------------------


def test_lookup_rows(deployed: Database) -> None:
    problems = []
    for table, expected in EXPECTED_LOOKUP_ROWS.items():
        rows = deployed.query(f'SELECT name FROM "{table}"')
        found = [r[0] for r in rows]
        if sorted(found) != sorted(expected):
            problems.append(f"{table}: expected rows {sorted(expected)}, found {sorted(found)}")
    assert not problems, report(problems, "lookup row")


def test_initial_tenants(deployed: Database) -> None:
    rows = deployed.query("SELECT id, name, description, blocked FROM tenants ORDER BY id")
    assert rows == [
        (-1, "-", "invalid tenant", False),
        (0, "*", "supertenant", False),
        (1, "default", "tenant1", False),
    ]


def test_schema_version(deployed: Database) -> None:
    assert deployed.query("SELECT component, version FROM versions") == [("schema", "4.3.0")]


def test_initial_global_config(deployed: Database) -> None:
    rows = deployed.query("SELECT value FROM configs WHERE tenant_id = -1 AND key = 'wat.multitenant'")
    assert rows == [("1",)]


def test_default_isolation_is_serializable_in_a_fresh_session(deployed: Database) -> None:
    assert deployed.query("SHOW default_transaction_isolation") == [("serializable",)]
    assert deployed.query("SHOW transaction_isolation") == [("serializable",)]


def test_deferrable_foreign_keys_can_be_deferred(fresh: Database) -> None:
    """SET CONSTRAINTS ALL DEFERRED lets a child row precede its parent in a transaction."""
    conn = fresh.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL DEFERRED")
            cur.execute("INSERT INTO users (tenant_id, login) VALUES (77, 'early')")
            cur.execute("INSERT INTO tenants (id, name) VALUES (77, 'late')")
    finally:
        conn.close()
    assert fresh.query("SELECT tenant_id FROM users WHERE login = 'early'") == [(77,)]


def test_first_objects_get_id_10000(fresh: Database) -> None:
    ids: dict[str, int] = {}
    conn = fresh.connect()
    try:
        with conn, conn.cursor() as cur:
            def insert(table: str, sql: str, params: tuple = ()) -> int:
                cur.execute(sql + " RETURNING id", params)
                ids[table] = cur.fetchone()[0]
                return ids[table]

            tenant = insert("tenants", "INSERT INTO tenants (name) VALUES ('acme')")
            user = insert("users", "INSERT INTO users (tenant_id, login) VALUES (%s, 'u')", (tenant,))
            insert("hosts", "INSERT INTO hosts (name, address, frontend, backend)"
                            " VALUES ('h', '10.0.0.1', true, true)")
            osf = insert("osfs", "INSERT INTO osfs (tenant_id, name, memory, use_overlay)"
                                 " VALUES (%s, 'o', 256, true)", (tenant,))
            insert("dis", "INSERT INTO dis (osf_id, path, version) VALUES (%s, 'p', 'v')", (osf,))
            insert("vms", "INSERT INTO vms (name, user_id, osf_id, di_tag)"
                          " VALUES ('vm', %s, %s, 'default')", (user, osf))
    finally:
        conn.close()
    assert ids == {"tenants": 2, "users": FIRST_ID, "hosts": FIRST_ID, "osfs": FIRST_ID,
                   "dis": FIRST_ID, "vms": FIRST_ID}


# --------------------------------------------------------------------------------------
# Triggers
# --------------------------------------------------------------------------------------


def test_triggers(deployed: Database) -> None:
    rows = deployed.query(
        """
        SELECT t.tgname, c.relname, t.tgtype::int, p.proname, l.lanname,
               format_type(p.prorettype, NULL),
               ARRAY(SELECT a.attname FROM unnest(t.tgattr::int2[]) u(n)
                       JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = u.n)
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_proc p ON p.oid = t.tgfoid
          JOIN pg_language l ON l.oid = p.prolang
         WHERE n.nspname = 'public' AND NOT t.tgisinternal
        """
    )
    problems = []
    found = {}
    for name, table, tgtype, function, language, returns, columns in rows:
        row_level, before = bool(tgtype & 1), bool(tgtype & 2)
        events = [e for bit, e in ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE"))
                  if tgtype & bit]
        found[name] = Trigger(table, "/".join(events), tuple(sorted(columns)), function)
        if not row_level or before or tgtype & 64:
            problems.append(f"trigger {name}: expected AFTER ... FOR EACH ROW")
        if (language, returns) != ("plpgsql", "trigger"):
            problems.append(f"trigger {name}: expected a plpgsql function returning trigger,"
                            f" found {language} returning {returns}")
    for name in sorted(set(EXPECTED_TRIGGERS) | set(found)):
        expected, actual = EXPECTED_TRIGGERS.get(name), found.get(name)
        if expected is None or actual is None:
            problems.append(f"trigger {name}: expected {expected}, found {actual}")
            continue
        expected = Trigger(expected.table, expected.event, tuple(sorted(expected.columns)),
                           expected.function or actual.function)
        if expected != actual:
            problems.append(f"trigger {name}: expected {expected}, found {actual}")
    assert not problems, report(problems, "trigger")


class Listener:
    """A second session LISTENing on every channel; collects notifications up to a fence."""

    FENCE = "qvd_test_fence"

    def __init__(self, db: Database, channels: set[str]) -> None:
        self.conn = db.connect()
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            for channel in sorted(channels | {self.FENCE}):
                cur.execute(f'LISTEN "{channel}"')

    def close(self) -> None:
        self.conn.close()

    def collect(self, writer: psycopg2.extensions.connection,
                timeout: float = 5.0) -> list[tuple[str, str]]:
        """Every notification committed by ``writer`` before a fence NOTIFY it sends now.

        A session's notifications arrive in commit order, so whatever precedes the
        fence is exactly what the previous statements delivered."""
        with writer.cursor() as cur:
            cur.execute(f"NOTIFY {self.FENCE}")
        got: list[tuple[str, str]] = []
        while True:
            self.conn.poll()
            while self.conn.notifies:
                n = self.conn.notifies.pop(0)
                if n.channel == self.FENCE:
                    return sorted(got)
                got.append((n.channel, n.payload))
            ready, _, _ = select.select([self.conn], [], [], timeout)
            assert ready, f"no fence notification within {timeout}s; got so far {got}"


ALL_CHANNELS = {
    "qvd_config_changed", "host_changed", "host_created", "host_deleted",
    "host_blocked_or_unblocked", "user_changed", "user_created", "user_deleted",
    "user_blocked_or_unblocked", "vm_changed", "vm_created", "vm_deleted",
    "vm_blocked_or_unblocked", "desktop_changed", "osf_changed", "osf_created", "osf_deleted",
    "di_changed", "di_created", "di_deleted", "di_blocked_or_unblocked",
}


@pytest.fixture
def notify_pair(fresh: Database) -> Iterator[tuple[psycopg2.extensions.connection, Listener]]:
    listener = Listener(fresh, ALL_CHANNELS)
    writer = fresh.connect()
    writer.autocommit = True
    try:
        yield writer, listener
    finally:
        writer.close()
        listener.close()


def _run(writer: psycopg2.extensions.connection, sql: str, params: tuple = ()) -> None:
    with writer.cursor() as cur:
        cur.execute(sql, params)


def test_configs_changes_notify_qvd_config_changed(
        notify_pair: tuple[psycopg2.extensions.connection, Listener]) -> None:
    writer, listener = notify_pair
    _run(writer, "INSERT INTO tenants (id, name) VALUES (42, 'acme')")
    assert listener.collect(writer) == [], "tenants have no trigger"
    expected = [("qvd_config_changed", "tenant_id=42")]
    _run(writer, "INSERT INTO configs (tenant_id, key, value) VALUES (42, 'vm.network.ip.start', 'x')")
    assert listener.collect(writer) == expected, "INSERT on configs"
    _run(writer, "UPDATE configs SET value = 'y' WHERE tenant_id = 42")
    assert listener.collect(writer) == expected, "UPDATE on configs"
    _run(writer, "DELETE FROM configs WHERE tenant_id = 42")
    assert listener.collect(writer) == expected, "DELETE on configs"
    _run(writer, "UPDATE configs SET value = '0' WHERE tenant_id = -1 AND key = 'wat.multitenant'")
    assert listener.collect(writer) == [("qvd_config_changed", "tenant_id=-1")], "global UPDATE"


def test_vm_runtime_state_change_notifies_vm_changed_with_owner_tenant(
        notify_pair: tuple[psycopg2.extensions.connection, Listener]) -> None:
    writer, listener = notify_pair
    _run(writer, "INSERT INTO tenants (id, name) VALUES (42, 'acme')")
    _run(writer, "INSERT INTO users (id, tenant_id, login) VALUES (7, 42, 'alice')")
    _run(writer, "INSERT INTO osfs (id, tenant_id, name, memory, use_overlay)"
                 " VALUES (3, 42, 'osf', 256, true)")
    _run(writer, "INSERT INTO vms (id, name, user_id, osf_id, di_tag) VALUES (5, 'vm', 7, 3, 'default')")
    _run(writer, "INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked)"
                 " VALUES (5, 'stopped', 'disconnected', false)")
    listener.collect(writer)
    _run(writer, "UPDATE vm_runtimes SET vm_state = 'starting' WHERE vm_id = 5")
    assert listener.collect(writer) == [
        ("desktop_changed", "user_id=7;vm_id=5"),
        ("vm_changed", "tenant_id=42"),
    ]


def test_every_notify_channel_and_payload(
        notify_pair: tuple[psycopg2.extensions.connection, Listener]) -> None:
    """Each §1.6 trigger delivers its channel/payload, and nothing else fires."""
    writer, listener = notify_pair
    t = "tenant_id=42"
    steps: list[tuple[str, list[tuple[str, str]]]] = [
        ("INSERT INTO tenants (id, name) VALUES (42, 'acme')", []),
        ("INSERT INTO users (id, tenant_id, login) VALUES (7, 42, 'alice')", [("user_created", t)]),
        ("UPDATE users SET description = 'd' WHERE id = 7", [("user_changed", t)]),
        ("UPDATE users SET blocked = true WHERE id = 7",
         [("user_blocked_or_unblocked", t), ("user_changed", t)]),
        ("INSERT INTO hosts (id, name, address, frontend, backend)"
         " VALUES (9, 'node', '10.0.0.1', true, true)", [("host_created", "")]),
        ("UPDATE hosts SET description = 'd' WHERE id = 9", [("host_changed", "")]),
        ("INSERT INTO host_runtimes (host_id, state, blocked) VALUES (9, 'stopped', false)", []),
        ("UPDATE host_runtimes SET pid = 1 WHERE host_id = 9", []),
        ("UPDATE host_runtimes SET state = 'running' WHERE host_id = 9", [("host_changed", "")]),
        ("UPDATE host_runtimes SET blocked = true WHERE host_id = 9",
         [("host_blocked_or_unblocked", "")]),
        ("INSERT INTO osfs (id, tenant_id, name, memory, use_overlay)"
         " VALUES (3, 42, 'osf', 256, true)", [("osf_created", t)]),
        ("UPDATE osfs SET memory = 512 WHERE id = 3", [("osf_changed", t)]),
        ("INSERT INTO dis (id, osf_id, path, version) VALUES (4, 3, '4-img', 'v1')",
         [("di_created", "")]),
        ("INSERT INTO di_runtimes (di_id) VALUES (4)", []),
        ("UPDATE di_runtimes SET percentage = 50 WHERE di_id = 4", [("di_changed", "")]),
        ("UPDATE dis SET description = 'd' WHERE id = 4", [("di_changed", "")]),
        ("UPDATE dis SET blocked = true WHERE id = 4",
         [("di_blocked_or_unblocked", ""), ("di_changed", "")]),
        ("INSERT INTO vms (id, name, user_id, osf_id, di_tag) VALUES (5, 'vm', 7, 3, 'default')",
         [("vm_created", t)]),
        ("UPDATE vms SET description = 'd' WHERE id = 5", [("vm_changed", t)]),
        ("INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked)"
         " VALUES (5, 'stopped', 'disconnected', false)", []),
        ("UPDATE vm_runtimes SET vm_pid = 1, host_id = 9 WHERE vm_id = 5", []),
        ("UPDATE vm_runtimes SET user_state = 'connecting' WHERE vm_id = 5",
         [("desktop_changed", "user_id=7;vm_id=5"), ("vm_changed", t)]),
        ("UPDATE vm_runtimes SET vm_expiration_hard = now() WHERE vm_id = 5", [("vm_changed", t)]),
        ("UPDATE vm_runtimes SET blocked = true WHERE vm_id = 5",
         [("vm_blocked_or_unblocked", t)]),
        ("DELETE FROM vms WHERE id = 5", [("vm_deleted", t)]),
        ("DELETE FROM dis WHERE id = 4", [("di_deleted", "")]),
        ("DELETE FROM osfs WHERE id = 3", [("osf_deleted", t)]),
        ("DELETE FROM users WHERE id = 7", [("user_deleted", t)]),
        ("DELETE FROM hosts WHERE id = 9", [("host_deleted", "")]),
    ]
    problems = []
    for sql, expected in steps:
        _run(writer, sql)
        got = listener.collect(writer)
        if got != sorted(expected):
            problems.append(f"{sql}\n      expected {sorted(expected)}\n      found    {got}")
    assert not problems, report(problems, "notification")
