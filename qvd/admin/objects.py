"""What ``qa`` knows of each QVD object: where it lives and which fields it shows.

A field name is usable alike in filters, in ``get`` field lists and in
``order``; names follow ``qa4`` (``user``, ``osf``, ``state``, ``disk_image``...)
with ``*_name``/``*_id`` aliases where the manual uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from qvd.admin.filters import Field


def _f(sql: str, type_: str = "str") -> Field:
    return Field(sql, type_)


@dataclass(frozen=True)
class ObjectKind:
    name: str
    table: str
    alias: str
    source: str
    fields: Mapping[str, Field]
    columns: tuple[str, ...]
    label: str
    blocked_in: Optional[tuple[str, str]] = None  # (table, key column) holding `blocked`
    property_table: Optional[str] = None  # e.g. vm_properties
    property_key: Optional[str] = None  # e.g. vm_id
    tenant_sql: Optional[str] = None  # the object's tenant, for property declarations

    @property
    def id_sql(self) -> str:
        return f"{self.alias}.id"

    def select(self, names: tuple[str, ...], where: str, order: str = "") -> str:
        exprs = ", ".join(f'{self.fields[n].sql} AS "{n}"' for n in names)
        return f"SELECT {exprs} FROM {self.source} WHERE {where}{order}"


_DI_BY_TAG = (
    "(SELECT d.{col} FROM dis d JOIN di_tags dt ON dt.di_id = d.id"
    " WHERE d.osf_id = v.osf_id AND dt.tag = v.di_tag ORDER BY d.id DESC LIMIT 1)"
)

VM = ObjectKind(
    name="vm",
    table="vms",
    alias="v",
    source=(
        "vms v JOIN vm_runtimes r ON r.vm_id = v.id JOIN users u ON u.id = v.user_id"
        " JOIN tenants t ON t.id = u.tenant_id JOIN osfs o ON o.id = v.osf_id"
        " LEFT JOIN hosts h ON h.id = r.host_id LEFT JOIN dis cd ON cd.id = r.current_di_id"
    ),
    fields={
        "id": _f("v.id", "int"),
        "name": _f("v.name"),
        "description": _f("v.description"),
        "tenant": _f("t.name"),
        "tenant_name": _f("t.name"),
        "tenant_id": _f("t.id", "int"),
        "user": _f("u.login"),
        "user_name": _f("u.login"),
        "user_id": _f("v.user_id", "int"),
        "osf": _f("o.name"),
        "osf_name": _f("o.name"),
        "osf_id": _f("v.osf_id", "int"),
        "di_tag": _f("v.di_tag"),
        "di": _f(_DI_BY_TAG.format(col="path")),
        "di_name": _f(_DI_BY_TAG.format(col="path")),
        "di_id": _f(_DI_BY_TAG.format(col="id"), "int"),
        "di_in_use": _f("cd.path"),
        "di_id_in_use": _f("r.current_di_id", "int"),
        "ip": _f("v.ip"),
        "ip_in_use": _f("r.vm_address"),
        "host": _f("h.name"),
        "host_name": _f("h.name"),
        "host_id": _f("r.host_id", "int"),
        "blocked": _f("COALESCE(r.blocked, FALSE)", "bool"),
        "state": _f("r.vm_state"),
        "vm_state": _f("r.vm_state"),
        "user_state": _f("r.user_state"),
        "expiration_soft": _f("r.vm_expiration_soft", "timestamp"),
        "expiration_hard": _f("r.vm_expiration_hard", "timestamp"),
        "storage": _f("v.storage"),
    },
    columns=("id", "tenant", "name", "blocked", "user", "host", "di", "ip", "ip_in_use",
             "di_in_use", "state", "user_state"),
    label="name",
    blocked_in=("vm_runtimes", "vm_id"),
    property_table="vm_properties",
    property_key="vm_id",
    tenant_sql="u.tenant_id",
)

USER = ObjectKind(
    name="user",
    table="users",
    alias="u",
    source="users u JOIN tenants t ON t.id = u.tenant_id",
    fields={
        "id": _f("u.id", "int"),
        "login": _f("u.login"),
        "name": _f("u.login"),
        "tenant": _f("t.name"),
        "tenant_name": _f("t.name"),
        "tenant_id": _f("u.tenant_id", "int"),
        "blocked": _f("u.blocked", "bool"),
        "description": _f("u.description"),
        "language": _f("CAST(u.language AS text)"),
        "vms": _f("(SELECT count(*) FROM vms x WHERE x.user_id = u.id)", "int"),
    },
    columns=("id", "tenant", "login", "blocked", "vms"),
    label="login",
    blocked_in=("users", "id"),
    property_table="user_properties",
    property_key="user_id",
    tenant_sql="u.tenant_id",
)

HOST = ObjectKind(
    name="host",
    table="hosts",
    alias="h",
    source="hosts h JOIN host_runtimes r ON r.host_id = h.id"
           " LEFT JOIN host_counters hc ON hc.host_id = h.id",
    fields={
        "id": _f("h.id", "int"),
        "name": _f("h.name"),
        "address": _f("h.address"),
        "description": _f("h.description"),
        "frontend": _f("h.frontend", "bool"),
        "backend": _f("h.backend", "bool"),
        "blocked": _f("r.blocked", "bool"),
        "state": _f("r.state"),
        "vms_connected": _f(
            "(SELECT count(*) FROM vm_runtimes x WHERE x.host_id = h.id"
            " AND x.user_state = 'connected')", "int"),
        "vms": _f("(SELECT count(*) FROM vm_runtimes x WHERE x.host_id = h.id)", "int"),
        # host_counters: what the node's L7R counted since the host was created
        "http_requests": _f("hc.http_requests", "int"),
        "auth_attempts": _f("hc.auth_attempts", "int"),
        "auth_ok": _f("hc.auth_ok", "int"),
        "nx_attempts": _f("hc.nx_attempts", "int"),
        "nx_ok": _f("hc.nx_ok", "int"),
        "short_sessions": _f("hc.short_sessions", "int"),
    },
    columns=("id", "name", "address", "blocked", "state", "vms", "vms_connected",
             "http_requests", "auth_attempts", "auth_ok", "nx_attempts", "nx_ok",
             "short_sessions"),
    label="name",
    blocked_in=("host_runtimes", "host_id"),
    property_table="host_properties",
    property_key="host_id",
    tenant_sql="-1",
)

OSF = ObjectKind(
    name="osf",
    table="osfs",
    alias="o",
    source="osfs o JOIN tenants t ON t.id = o.tenant_id",
    fields={
        "id": _f("o.id", "int"),
        "name": _f("o.name"),
        "tenant": _f("t.name"),
        "tenant_name": _f("t.name"),
        "tenant_id": _f("o.tenant_id", "int"),
        "description": _f("o.description"),
        "memory": _f("o.memory", "int"),
        "overlay": _f("o.use_overlay", "bool"),
        "use_overlay": _f("o.use_overlay", "bool"),
        "user_storage": _f("o.user_storage_size", "int"),
        "user_storage_size": _f("o.user_storage_size", "int"),
        "is_application": _f("o.is_application", "bool"),
        "dis": _f("(SELECT count(*) FROM dis x WHERE x.osf_id = o.id)", "int"),
        "vms": _f("(SELECT count(*) FROM vms x WHERE x.osf_id = o.id)", "int"),
    },
    columns=("id", "tenant", "name", "overlay", "memory", "user_storage", "dis", "vms"),
    label="name",
    property_table="osf_properties",
    property_key="osf_id",
    tenant_sql="o.tenant_id",
)

DI = ObjectKind(
    name="di",
    table="dis",
    alias="d",
    source="dis d JOIN osfs o ON o.id = d.osf_id JOIN tenants t ON t.id = o.tenant_id",
    fields={
        "id": _f("d.id", "int"),
        "disk_image": _f("d.path"),
        "name": _f("d.path"),
        "path": _f("d.path"),
        "version": _f("d.version"),
        "osf": _f("o.name"),
        "osf_name": _f("o.name"),
        "osf_id": _f("d.osf_id", "int"),
        "tenant": _f("t.name"),
        "tenant_name": _f("t.name"),
        "tenant_id": _f("o.tenant_id", "int"),
        "blocked": _f("d.blocked", "bool"),
        "description": _f("d.description"),
        "tags": _f(
            "(SELECT string_agg(x.tag, ',' ORDER BY x.fixed DESC, x.tag) FROM di_tags x"
            " WHERE x.di_id = d.id)"),
        "tag": _f("(SELECT string_agg(x.tag, ',') FROM di_tags x WHERE x.di_id = d.id)"),
    },
    columns=("id", "tenant", "disk_image", "version", "osf", "blocked", "tags"),
    label="disk_image",
    blocked_in=("dis", "id"),
    property_table="di_properties",
    property_key="di_id",
    tenant_sql="o.tenant_id",
)

TENANT = ObjectKind(
    name="tenant",
    table="tenants",
    alias="t",
    source="tenants t",
    fields={
        "id": _f("t.id", "int"),
        "name": _f("t.name"),
        "description": _f("t.description"),
        "blocked": _f("COALESCE(t.blocked, FALSE)", "bool"),
        "users": _f("(SELECT count(*) FROM users x WHERE x.tenant_id = t.id)", "int"),
    },
    columns=("id", "name", "description", "blocked", "users"),
    label="name",
    blocked_in=("tenants", "id"),
)

CONFIG = ObjectKind(
    name="config",
    table="configs",
    alias="c",
    source="configs c",
    fields={
        "key": _f("c.key"),
        "name": _f("c.key"),
        "value": _f("c.value"),
        "tenant_id": _f("c.tenant_id", "int"),
    },
    columns=("tenant_id", "key", "value"),
    label="key",
)

LOG = ObjectKind(
    name="log",
    table="log",
    alias="l",
    source="log l",
    fields={
        "id": _f("l.id", "int"),
        "time": _f("l.time", "timestamp"),
        "admin_id": _f("l.administrator_id", "int"),
        "admin_name": _f("l.administrator_name"),
        "superadmin": _f("l.superadmin", "bool"),
        "tenant_id": _f("l.tenant_id", "int"),
        "tenant_name": _f("l.tenant_name"),
        "action": _f("l.action"),
        "type_of_action": _f("l.type_of_action"),
        "qvd_object": _f("l.qvd_object"),
        "object_id": _f("l.object_id", "int"),
        "object_name": _f("l.object_name"),
        "arguments": _f("l.arguments"),
        "status": _f("l.status", "int"),
        "source": _f("l.source"),
        "ip": _f("l.ip"),
    },
    columns=("id", "time", "admin_name", "source", "ip", "action", "qvd_object", "object_name",
             "status"),
    label="object_name",
)

KINDS: dict[str, ObjectKind] = {k.name: k for k in (VM, USER, HOST, OSF, DI, TENANT, CONFIG, LOG)}
