"""What the API knows of each kind of object: columns, and which it may list,
filter, order, create and change (QVD 4's ``REST/Model.pm``, as the reference
describes it).

A ``Column`` is one API name with its SQL expression, its value type, the
ACL pattern an administrator needs to see, filter or order by it, and the
optional joins it needs; a ``Model`` groups them with the ``FROM`` clause,
the object's tenant and the lists of names each kind of action accepts.
The SQL text here is trusted (written by us); values are always parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from qvd.admin.filters import FieldType


@dataclass(frozen=True)
class Column:
    sql: str
    type: FieldType = "str"
    acl: Optional[str] = None
    joins: tuple[str, ...] = ()
    # a one-to-many filter: "SELECT 1 FROM ... WHERE <link> AND {cond}", {cond} on ``sql``
    exists: Optional[str] = None
    convert: Optional[str] = None  # name of an output conversion (see qvd.api.listing)


@dataclass(frozen=True)
class Model:
    name: str
    log_object: str
    source: str
    id_sql: str
    columns: Mapping[str, Column]
    fields: tuple[str, ...]
    filters: tuple[str, ...]
    order: tuple[str, ...] = ()
    default_order: tuple[str, ...] = ()
    tenant_sql: Optional[str] = None
    name_sql: Optional[str] = None
    joins: Mapping[str, str] = field(default_factory=dict)
    property_table: Optional[str] = None  # e.g. vm_properties
    property_key: Optional[str] = None  # e.g. vm_id
    always: Optional[str] = None  # a condition every query of this model gets
    filters_by_type: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mandatory_filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    state_fields: tuple[str, ...] = ()
    shared: bool = True  # tenant admins also see the common tenant's (-1) rows in lists

    def filters_for(self, type_of_action: str) -> tuple[str, ...]:
        return self.filters_by_type.get(type_of_action, self.filters if type_of_action == "list"
                                        else ("id", "tenant_id"))

    def column(self, name: str) -> Column:
        return self.columns[name]


def creation(object_name: str, see: str) -> dict[str, Column]:
    """creation_date / creation_admin_*: from the object's 'create' row of the log."""
    return {
        "creation_date": Column("created.time", "timestamp", f"^{see}\\.see\\.creation-date$",
                                ("created",)),
        "creation_admin_id": Column("created.administrator_id", "int",
                                    f"^{see}\\.see\\.created-by$", ("created",)),
        "creation_admin_name": Column("created.administrator_name", "str",
                                      f"^{see}\\.see\\.created-by$", ("created",)),
    }


def created_join(qvd_object: str, id_sql: str) -> str:
    return (f"LEFT JOIN LATERAL (SELECT l.time, l.administrator_id, l.administrator_name"
            f" FROM log l WHERE l.qvd_object = '{qvd_object}' AND l.object_id = {id_sql}"
            f" AND l.type_of_action = 'create' ORDER BY l.id DESC LIMIT 1) created ON TRUE")


def properties_column(table: str, key: str, id_sql: str, acl: str) -> Column:
    """``properties``: {qvd_object_properties_list id: {key, value, tenant_id}}."""
    return Column(
        f"(SELECT COALESCE(json_object_agg(q.id, json_build_object('key', pl.key, 'value',"
        f" xp.value, 'tenant_id', pl.tenant_id)), '{{}}'::json) FROM {table} xp"
        f" JOIN qvd_object_properties_list q ON q.id = xp.property_id"
        f" JOIN properties_list pl ON pl.id = q.property_id WHERE xp.{key} = {id_sql})",
        "str", acl, convert="json")


CREATED = ("creation_date", "creation_admin_id", "creation_admin_name")

_VM_SEE = r"^(vm\.see\.|[^.]+\.see\.vm-list-)"
_DI_BY_TAG = (
    "LEFT JOIN LATERAL (SELECT d.id, d.path, d.version FROM dis d JOIN di_tags dt"
    " ON dt.di_id = d.id WHERE d.osf_id = v.osf_id AND dt.tag = v.di_tag"
    " ORDER BY d.id DESC LIMIT 1) di ON TRUE"
)

VM = Model(
    name="VM", log_object="vm", id_sql="v.id", name_sql="v.name", tenant_sql="u.tenant_id",
    source=("vms v JOIN vm_runtimes vr ON vr.vm_id = v.id JOIN users u ON u.id = v.user_id"
            " JOIN tenants t ON t.id = u.tenant_id"),
    joins={
        "osf": "JOIN osfs o ON o.id = v.osf_id",
        "host": "LEFT JOIN hosts h ON h.id = vr.host_id",
        "di_in_use": "LEFT JOIN dis cd ON cd.id = vr.current_di_id",
        "di": _DI_BY_TAG,
        "created": created_join("vm", "v.id"),
    },
    columns={
        "storage": Column("v.storage"),
        "id": Column("v.id", "int"),
        "name": Column("v.name"),
        "description": Column("v.description", acl=r"^vm\.see\.description$"),
        "user_id": Column("v.user_id", "int", r"^vm\.see\.user$"),
        "user_name": Column("u.login", acl=r"^vm\.see\.user$"),
        "osf_id": Column("v.osf_id", "int", r"^vm\.see\.osf$"),
        "osf_name": Column("o.name", acl=r"^vm\.see\.osf$", joins=("osf",)),
        "di_tag": Column("v.di_tag", acl=r"^vm\.see\.di-tag$"),
        "blocked": Column("COALESCE(vr.blocked, FALSE)", "bool", _VM_SEE + "block$"),
        "expiration_soft": Column("vr.vm_expiration_soft", "timestamp", _VM_SEE + "expiration$"),
        "expiration_hard": Column("vr.vm_expiration_hard", "timestamp", _VM_SEE + "expiration$"),
        "time_until_expiration_soft": Column("vr.vm_expiration_soft", "timestamp",
                                             _VM_SEE + "expiration$", convert="remaining"),
        "time_until_expiration_hard": Column("vr.vm_expiration_hard", "timestamp",
                                             _VM_SEE + "expiration$", convert="remaining"),
        "state": Column("vr.vm_state", acl=_VM_SEE + "state$"),
        "host_id": Column("vr.host_id", "int", r"^vm\.see\.host$"),
        "host_name": Column("h.name", acl=r"^vm\.see\.host$", joins=("host",)),
        "host": Column("h.name", acl=r"^vm\.see\.host$", joins=("host",)),
        "di_id": Column("di.id", "int", r"^vm\.see\.di$", ("di",)),
        "di_name": Column("di.path", acl=r"^vm\.see\.di$", joins=("di",)),
        "di_version": Column("di.version", acl=r"^vm\.see\.di-version$", joins=("di",)),
        "di_id_in_use": Column("vr.current_di_id", "int", r"^vm\.see\.di$"),
        "di_name_in_use": Column("cd.path", acl=r"^vm\.see\.di$", joins=("di_in_use",)),
        "di_version_in_use": Column("cd.version", acl=r"^vm\.see\.di-version$",
                                    joins=("di_in_use",)),
        "user_state": Column("vr.user_state", acl=r"^vm\.see\.user-state$"),
        "ip": Column("v.ip", acl=r"^vm\.see\.ip$"),
        "ip_in_use": Column("vr.vm_address", acl=r"^vm\.see\.ip$"),
        "mac": Column("v.ip", acl=r"^vm\.see\.mac$", convert="mac"),
        "next_boot_ip": Column("vr.vm_address", acl=r"^vm\.see\.next-boot-ip$"),
        "ssh_port": Column("vr.vm_ssh_port", "int", r"^vm\.see\.port-ssh$"),
        "vnc_port": Column("vr.vm_vnc_port", "int", r"^vm\.see\.port-vnc$"),
        "serial_port": Column("vr.vm_serial_port", "int", r"^vm\.see\.port-serial$"),
        "tenant_id": Column("u.tenant_id", "int"),
        "tenant_name": Column("t.name"),
        "tenant": Column("t.name"),
        **creation("vm", "vm"),
        "properties": properties_column("vm_properties", "vm_id", "v.id", r"^vm\.see\.properties$"),
    },
    fields=("storage", "id", "name", "description", "user_id", "user_name", "osf_id", "osf_name",
            "di_tag", "blocked", "expiration_soft", "expiration_hard", "state", "host_id",
            "host_name", "di_id", "user_state", "ip", "mac", "next_boot_ip", "ssh_port",
            "vnc_port", "serial_port", *CREATED, "di_version", "di_name", "properties",
            "ip_in_use", "di_id_in_use", "di_name_in_use", "di_version_in_use",
            "time_until_expiration_soft", "time_until_expiration_hard"),
    filters=("storage", "id", "name", "description", "user_id", "user_name", "osf_id", "osf_name",
             "di_tag", "blocked", "expiration_soft", "expiration_hard", "state", "host",
             "host_id", "host_name", "di_name", "di_id", "user_state", "ip", "next_boot_ip",
             "ssh_port", "vnc_port", "serial_port", "tenant", "tenant_id", "tenant_name",
             *CREATED, "ip_in_use", "di_id_in_use"),
    order=("id", "name", "tenant_id", "tenant_name", "description", "user_id", "user_name",
           "osf_id", "osf_name", "di_tag", "blocked", "storage", "expiration_soft",
           "expiration_hard", "state", "host_id", "user_state", "ip", "ssh_port", "vnc_port",
           "serial_port", *CREATED),
    filters_by_type={"exec": ("id", "tenant_id", "user_id", "host_id"),
                     "state": ("id", "tenant_id")},
    mandatory_filters={"state": ("id",)},
    state_fields=("state", "user_state"),
    property_table="vm_properties", property_key="vm_id",
)

USER = Model(
    name="User", log_object="user", id_sql="u.id", name_sql="u.login", tenant_sql="u.tenant_id",
    source="users u JOIN tenants t ON t.id = u.tenant_id",
    joins={"created": created_join("user", "u.id")},
    columns={
        "id": Column("u.id", "int"),
        "name": Column("u.login"),
        "description": Column("u.description", acl=r"^user\.see\.description$"),
        "blocked": Column("u.blocked", "bool", r"^user\.see\.block$"),
        **creation("user", "user"),
        "number_of_vms": Column("(SELECT count(*) FROM vms x WHERE x.user_id = u.id)", "int",
                                r"^user\.see\.vms-info$"),
        "number_of_vms_connected": Column(
            "(SELECT count(*) FROM vms x JOIN vm_runtimes xr ON xr.vm_id = x.id"
            " WHERE x.user_id = u.id AND xr.user_state = 'connected')", "int",
            r"^user\.see\.vm-list-state$"),
        "properties": properties_column("user_properties", "user_id", "u.id",
                                        r"^user\.see\.properties$"),
        "tenant_id": Column("u.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("id", "name", "description", "blocked", *CREATED, "number_of_vms",
            "number_of_vms_connected", "properties"),
    filters=("id", "name", "description", "blocked", *CREATED, "tenant_id", "tenant_name"),
    order=("id", "name", "tenant_id", "tenant_name", "description", "blocked", *CREATED),
    mandatory_filters={"state": ("id",)},
    state_fields=("number_of_vms_connected",),
    property_table="user_properties", property_key="user_id",
)

HOST = Model(
    name="Host", log_object="host", id_sql="h.id", name_sql="h.name", tenant_sql=None,
    source="hosts h JOIN host_runtimes hr ON hr.host_id = h.id",
    joins={"created": created_join("host", "h.id")},
    columns={
        "id": Column("h.id", "int"),
        "name": Column("h.name"),
        "description": Column("h.description", acl=r"^host\.see\.description$"),
        "address": Column("h.address", acl=r"^host\.see\.address$"),
        "blocked": Column("hr.blocked", "bool", r"^host\.see\.block$"),
        "frontend": Column("h.frontend", "bool"),
        "backend": Column("h.backend", "bool"),
        "state": Column("hr.state", acl=r"^host\.see\.state$"),
        # ours: the live free capacity its HKD's heartbeat reports (RAM in MB, CPU in bogomips)
        "usable_ram": Column("hr.usable_ram", "float", r"^host\.see\.state$"),
        "usable_cpu": Column("hr.usable_cpu", "float", r"^host\.see\.state$"),
        "vm_id": Column("x.vm_id", "int", exists="SELECT 1 FROM vm_runtimes x"
                        " WHERE x.host_id = h.id AND {cond}"),
        **creation("host", "host"),
        "number_of_vms_connected": Column(
            "(SELECT count(*) FROM vm_runtimes x WHERE x.host_id = h.id"
            " AND x.user_state = 'connected')", "int", r"^host\.see\.vms-info$"),
        "properties": properties_column("host_properties", "host_id", "h.id",
                                        r"^host\.see\.properties$"),
    },
    fields=("id", "name", "description", "address", "blocked", "frontend", "backend", "state",
            *CREATED, "number_of_vms_connected", "properties", "usable_ram", "usable_cpu"),
    filters=("id", "name", "description", "address", "blocked", "frontend", "backend", "state",
             "vm_id", *CREATED),
    order=("id", "name", "description", "address", "blocked", "state", *CREATED,
           "number_of_vms_connected", "usable_ram", "usable_cpu"),
    filters_by_type={"update": ("id",), "delete": ("id",), "state": ("id",)},
    mandatory_filters={"state": ("id",)},
    state_fields=("number_of_vms_connected",),
    property_table="host_properties", property_key="host_id",
)

OSF = Model(
    name="OSF", log_object="osf", id_sql="o.id", name_sql="o.name", tenant_sql="o.tenant_id",
    source="osfs o JOIN tenants t ON t.id = o.tenant_id",
    joins={"created": created_join("osf", "o.id")},
    columns={
        "id": Column("o.id", "int"),
        "name": Column("o.name"),
        "description": Column("o.description", acl=r"^osf\.see\.description$"),
        "overlay": Column("o.use_overlay", "bool", r"^osf\.see\.overlay$"),
        "user_storage": Column("COALESCE(o.user_storage_size, 0)", "int",
                               r"^osf\.see\.user-storage$"),
        "memory": Column("o.memory", "int", r"^osf\.see\.memory$"),
        "osd_id": Column("o.osd_id", "int"),
        "vm_id": Column("x.id", "int", exists="SELECT 1 FROM vms x WHERE x.osf_id = o.id AND {cond}"),
        "di_id": Column("x.id", "int", exists="SELECT 1 FROM dis x WHERE x.osf_id = o.id AND {cond}"),
        "number_of_vms": Column("(SELECT count(*) FROM vms x WHERE x.osf_id = o.id)", "int",
                                r"^osf\.see\.vms-info$"),
        "number_of_dis": Column("(SELECT count(*) FROM dis x WHERE x.osf_id = o.id)", "int",
                                r"^osf\.see\.dis-info$"),
        "properties": properties_column("osf_properties", "osf_id", "o.id",
                                        r"^osf\.see\.properties$"),
        **creation("osf", "osf"),
        "tenant_id": Column("o.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("id", "name", "description", "overlay", "user_storage", "memory", "number_of_vms",
            "number_of_dis", "properties", *CREATED, "osd_id"),
    filters=("id", "name", "description", "overlay", "user_storage", "memory", "vm_id", "di_id",
             "tenant_id", "tenant_name", *CREATED),
    order=("id", "name", "tenant_id", "tenant_name", "description", "overlay", "user_storage",
           "memory", *CREATED),
    property_table="osf_properties", property_key="osf_id",
)

_DI_TAGS = ("(SELECT COALESCE(json_agg(json_build_object('id', x.id, 'tag', x.tag, 'fixed',"
            " CASE WHEN x.fixed THEN 1 ELSE 0 END) ORDER BY x.tag), '[]'::json)"
            " FROM di_tags x WHERE x.di_id = d.id)")

DI = Model(
    name="DI", log_object="di", id_sql="d.id", name_sql="d.path", tenant_sql="o.tenant_id",
    source=("dis d JOIN osfs o ON o.id = d.osf_id JOIN tenants t ON t.id = o.tenant_id"
            " LEFT JOIN di_runtimes dr ON dr.di_id = d.id"),
    joins={"created": created_join("di", "d.id")},
    columns={
        "id": Column("d.id", "int"),
        "disk_image": Column("d.path"),
        "description": Column("d.description", acl=r"^di\.see\.description$"),
        "version": Column("d.version", acl=r"^di\.see\.version$"),
        "osf_id": Column("d.osf_id", "int", r"^di\.see\.osf$"),
        "osf_name": Column("o.name", acl=r"^di\.see\.osf$"),
        "blocked": Column("d.blocked", "bool", r"^di\.see\.block$"),
        "tags": Column(_DI_TAGS, acl=r"^(di\.see\.|[^.]+\.see\.di-list-)(tags|default|head)$",
                       convert="json"),
        "tag": Column("x.tag", acl=r"^(di\.see\.|[^.]+\.see\.di-list-)(tags|default|head)$",
                      exists="SELECT 1 FROM di_tags x WHERE x.di_id = d.id AND {cond}"),
        "properties": properties_column("di_properties", "di_id", "d.id", r"^di\.see\.properties$"),
        **creation("di", "di"),
        "state": Column("CAST(dr.state AS text)"),
        "state_ts": Column("dr.state_ts", "int"),
        "elapsed_time": Column("dr.elapsed_time", "int"),
        "auto_publish": Column("dr.auto_publish", "int"),
        "foreign_id": Column("dr.foreign_id", "int"),
        "expiration_time_soft": Column("dr.expiration_time_soft", "int"),
        "expiration_time_hard": Column("dr.expiration_time_hard", "int"),
        "percentage": Column("dr.percentage", "float"),
        "error_code": Column("dr.error_code", "int"),
        "status_message": Column("dr.status_message"),
        "tenant_id": Column("o.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("id", "disk_image", "description", "version", "osf_id", "osf_name", "blocked", "tags",
            "properties", *CREATED, "state", "state_ts", "elapsed_time", "auto_publish",
            "foreign_id", "expiration_time_soft", "expiration_time_hard", "percentage",
            "error_code", "status_message"),
    filters=("id", "disk_image", "description", "version", "osf_id", "osf_name", "blocked", "tag",
             *CREATED, "state", "state_ts", "elapsed_time", "auto_publish", "foreign_id",
             "tenant_id", "tenant_name", "expiration_time_soft", "expiration_time_hard",
             "percentage", "error_code", "status_message"),
    order=("id", "disk_image", "tenant_id", "tenant_name", "description", "version", "osf_id",
           "osf_name", "blocked", *CREATED),
    property_table="di_properties", property_key="di_id",
)

TENANT = Model(
    name="Tenant", log_object="tenant", id_sql="t.id", name_sql="t.name", tenant_sql="t.id",
    source="tenants t LEFT JOIN wat_setups_by_tenants ws ON ws.tenant_id = t.id",
    joins={"created": created_join("tenant", "t.id")},
    columns={
        "id": Column("t.id", "int"),
        "name": Column("t.name"),
        "description": Column("t.description", acl=r"^tenant\.see\.description$"),
        "language": Column("COALESCE(CAST(ws.language AS text), 'auto')",
                           acl=r"^tenant\.see\.language$"),
        "block": Column("COALESCE(ws.block, 10)", "int", r"^tenant\.see\.blocksize$"),
        "blocked": Column("COALESCE(t.blocked, FALSE)", "bool", r"^tenant\.see\.block$"),
        **creation("tenant", "tenant"),
    },
    fields=("id", "name", "description", "language", "block", "blocked", *CREATED),
    filters=("id", "name", "description", "language", "block", "blocked", *CREATED),
    order=("id", "name", "description", "language", "block", "blocked", *CREATED),
    filters_by_type={"update": ("id",), "delete": ("id",)},
    always="t.id <> -1",
)

ADMINISTRATOR = Model(
    name="Administrator", log_object="administrator", id_sql="a.id", name_sql="a.name",
    tenant_sql="a.tenant_id",
    source=("administrators a JOIN tenants t ON t.id = a.tenant_id"
            " LEFT JOIN wat_setups_by_administrators ws ON ws.administrator_id = a.id"),
    joins={"created": created_join("administrator", "a.id")},
    columns={
        "id": Column("a.id", "int"),
        "name": Column("a.name"),
        "description": Column("a.description", acl=r"^administrator\.see\.description$"),
        "language": Column("COALESCE(CAST(ws.language AS text), 'auto')",
                           acl=r"^administrator\.see\.language$"),
        "block": Column("COALESCE(ws.block, 10)", "int"),
        "roles": Column("(SELECT COALESCE(json_object_agg(r.id, r.name), '{}'::json)"
                        " FROM role_administrator_relations ra JOIN roles r ON r.id = ra.role_id"
                        " WHERE ra.administrator_id = a.id)", acl=r"^administrator\.see\.roles$",
                        convert="json"),
        "role_id": Column("x.role_id", "int", exists="SELECT 1 FROM role_administrator_relations x"
                          " WHERE x.administrator_id = a.id AND {cond}"),
        "role_name": Column("xr.name", exists="SELECT 1 FROM role_administrator_relations x"
                            " JOIN roles xr ON xr.id = x.role_id WHERE x.administrator_id = a.id"
                            " AND {cond}"),
        **creation("administrator", "administrator"),
        "tenant_id": Column("a.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("name", "description", "roles", "id", "language", "block", *CREATED),
    filters=("name", "description", "tenant_id", "tenant_name", "id", "language", "block",
             "role_id", "role_name", *CREATED),
    order=("id", "name", "tenant_id", "tenant_name", "description", "language", "block", *CREATED),
    always="a.id <> 0",
)

_ROLE_ACLS = (
    "(SELECT json_build_object("
    "'positive', COALESCE(json_agg(x.name ORDER BY x.name) FILTER (WHERE x.positive), '[]'),"
    " 'negative', COALESCE(json_agg(x.name ORDER BY x.name) FILTER (WHERE NOT x.positive), '[]'))"
    " FROM (SELECT ac.name, ar.positive FROM acl_role_relations ar JOIN acls ac"
    " ON ac.id = ar.acl_id WHERE ar.role_id = r.id) x)"
)
_ROLE_ROLES = (
    "(SELECT COALESCE(json_object_agg(p.id, json_build_object('name', p.name, 'tenant_id',"
    " p.tenant_id, 'description', p.description, 'fixed', CASE WHEN p.fixed THEN 1 ELSE 0 END,"
    " 'internal', CASE WHEN p.internal THEN 1 ELSE 0 END)), '{}'::json)"
    " FROM role_role_relations rr JOIN roles p ON p.id = rr.inherited_id"
    " WHERE rr.inheritor_id = r.id)"
)

ROLE = Model(
    name="Role", log_object="role", id_sql="r.id", name_sql="r.name", tenant_sql="r.tenant_id",
    source="roles r JOIN tenants t ON t.id = r.tenant_id",
    joins={"created": created_join("role", "r.id")},
    columns={
        "id": Column("r.id", "int"),
        "name": Column("r.name"),
        "description": Column("r.description", acl=r"^role\.see\.description$"),
        "fixed": Column("r.fixed", "bool"),
        "internal": Column("r.internal", "bool"),
        "acls": Column(_ROLE_ACLS, acl=r"^role\.see\.acl-list$", convert="json"),
        "roles": Column(_ROLE_ROLES, acl=r"^role\.see\.(acl-list|(acl-list|inherited)-roles)$",
                        convert="json"),
        **creation("role", "role"),
        "tenant_id": Column("r.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("name", "id", "description", "fixed", "internal", "acls", "roles", *CREATED),
    filters=("name", "id", "description", "fixed", "internal", "tenant_id", "tenant_name",
             *CREATED),
    order=("id", "name", "tenant_id", "tenant_name", "description", "fixed", "internal", *CREATED),
    filters_by_type={"update": ("id",), "delete": ("id",)},
)

# The ACLs of one administrator or role, each marked operative or not.  The
# override patterns (qvd.api.acls) come in as parameters, as in QVD 4's view.
_ACLS_OF_ADMIN = (
    "(SELECT ac.id, ac.name, ac.description,"
    " CASE WHEN ac.name ~ %s THEN FALSE WHEN ac.name ~ %s THEN TRUE"
    " ELSE g.roles IS NOT NULL END AS operative, COALESCE(g.roles, '{}'::json) AS roles"
    " FROM acls ac LEFT JOIN (SELECT x.acl_id, json_object_agg(rl.id, rl.name) AS roles"
    " FROM role_administrator_relations ra JOIN all_acl_role_relations x"
    " ON x.inheritor_id = ra.role_id JOIN roles rl ON rl.id = ra.role_id"
    " WHERE ra.administrator_id = %s GROUP BY x.acl_id) g ON g.acl_id = ac.id"
    " WHERE ac.name !~ %s) oa"
)
_ACLS_OF_ROLE = (
    "(SELECT ac.id, ac.name, ac.description, g.acl_id IS NOT NULL AS operative,"
    " COALESCE(g.roles, '{}'::json) AS roles"
    " FROM acls ac LEFT JOIN (SELECT x.acl_id, json_object_agg(rl.id, rl.name) AS roles"
    " FROM all_acl_role_relations x JOIN roles rl ON rl.id = x.inherited_id"
    " WHERE x.inheritor_id = %s GROUP BY x.acl_id) g ON g.acl_id = ac.id"
    " WHERE ac.name !~ %s) oa"
)


def _acl_columns(owner: str) -> dict[str, Column]:
    return {
        "id": Column("oa.id", "int"),
        "name": Column("oa.name"),
        "acl_name": Column("oa.name"),
        "description": Column("oa.description"),
        "operative": Column("oa.operative", "bool"),
        "roles": Column("oa.roles", convert="json"),
        owner: Column("%s", "int"),  # consumed by the source (exactly one value)
    }


ACLS_IN_ADMIN = Model(
    name="Operative_Acls_In_Administrator", log_object="acl", id_sql="oa.id", name_sql="oa.name",
    source=_ACLS_OF_ADMIN, columns=_acl_columns("admin_id"),
    fields=("id", "name", "roles", "operative", "description"),
    filters=("acl_name", "admin_id", "operative", "name", "id", "description"),
    order=("id", "name", "operative", "description"), default_order=("name",),
)
ACLS_IN_ROLE = Model(
    name="Operative_Acls_In_Role", log_object="acl", id_sql="oa.id", name_sql="oa.name",
    source=_ACLS_OF_ROLE, columns=_acl_columns("role_id"),
    fields=("id", "name", "roles", "operative", "description"),
    filters=("acl_name", "role_id", "operative", "name", "id", "description"),
    order=("id", "name", "operative", "description"), default_order=("name",),
)  # role_id is mandatory: acls_in_role takes it (6220) before the rest are applied

_IN_OBJECT = ("COALESCE((SELECT q.id FROM qvd_object_properties_list q WHERE q.property_id = pl.id"
              " AND q.qvd_object = '{0}'), 0)")

PROPERTY_LIST = Model(
    name="Property_List", log_object="property", id_sql="pl.id", name_sql="pl.key",
    tenant_sql="pl.tenant_id", source="properties_list pl JOIN tenants t ON t.id = pl.tenant_id",
    columns={
        "id": Column("pl.id", "int"),
        "property_id": Column("pl.id", "int"),
        "tenant_id": Column("pl.tenant_id", "int"),
        "tenant_name": Column("t.name"),
        "key": Column("pl.key"),
        "description": Column("pl.description"),
        **{f"in_{o}": Column(_IN_OBJECT.format(o), "int") for o in ("user", "vm", "host", "osf", "di")},
    },
    fields=("id", "property_id", "tenant_id", "key", "description", "in_user", "in_vm", "in_host",
            "in_osf", "in_di"),
    filters=("tenant_id", "id", "key", "description"),
    order=("id", "property_id", "tenant_id", "key", "description"),
    filters_by_type={"update": ("id", "tenant_id"), "delete": ("id", "tenant_id")},
)


def object_property_list(qvd_object: str) -> Model:
    """``<obj>_get_property_list``: the property keys declared for one kind of object."""
    return Model(
        name="QVD_Object_Property_List", log_object="property", id_sql="q.id", name_sql="pl.key",
        tenant_sql="pl.tenant_id",
        source=("qvd_object_properties_list q JOIN properties_list pl ON pl.id = q.property_id"
                " JOIN tenants t ON t.id = pl.tenant_id"),
        columns={
            "id": Column("q.id", "int"),
            "property_id": Column("q.property_id", "int"),
            "key": Column("pl.key"),
            "description": Column("pl.description"),
            "tenant_id": Column("pl.tenant_id", "int"),
            "tenant_name": Column("t.name"),
        },
        fields=("id", "property_id", "key", "description"),
        filters=("id", "tenant_id", "property_id"),
        order=("id", "key", "property_id"),
        filters_by_type={"delete": ("id", "tenant_id", "property_id")},
        always=f"q.qvd_object = '{qvd_object}'",
    )


def _views(source: str, alias: str) -> dict[str, Column]:
    return {
        "tenant_id": Column(f"{alias}.tenant_id", "int"),
        "field": Column(f"{alias}.field"),
        "visible": Column(f"{alias}.visible", "bool"),
        "view_type": Column(f"CAST({alias}.view_type AS text)"),
        "device_type": Column(f"CAST({alias}.device_type AS text)"),
        "qvd_object": Column(f"CAST({alias}.qvd_object AS text)"),
        "property": Column(f"{alias}.property", "int"),
    }


TENANT_VIEWS = Model(
    name="Operative_Views_In_Tenant", log_object="tenant_view", id_sql="ov.field",
    tenant_sql="ov.tenant_id", source="operative_views_in_tenants ov", columns=_views("", "ov"),
    fields=("tenant_id", "field", "visible", "view_type", "device_type", "qvd_object", "property"),
    filters=("tenant_id", "field", "visible", "view_type", "device_type", "qvd_object", "property"),
    order=("tenant_id", "field", "visible", "view_type", "device_type", "qvd_object", "property"),
    default_order=("field",),
)

LOG = Model(
    name="Log", log_object="log", id_sql="l.id", name_sql=None, tenant_sql="l.tenant_id",
    source="log l", shared=False,
    columns={
        "id": Column("l.id", "int"),
        "admin_id": Column("l.administrator_id", "int"),
        "admin_name": Column("l.administrator_name"),
        "tenant_id": Column("l.tenant_id", "int"),
        "tenant_name": Column("l.tenant_name"),
        "action": Column("l.action"),
        "arguments": Column("l.arguments"),
        "object_id": Column("l.object_id", "int"),
        "object_name": Column("l.object_name"),
        "time": Column("l.time", "timestamp"),
        "antiquity": Column("CAST(EXTRACT(EPOCH FROM LOCALTIMESTAMP - l.time) AS integer)", "int"),
        "status": Column("l.status", "int"),
        "source": Column("l.source"),
        "ip": Column("l.ip"),
        "type_of_action": Column("l.type_of_action"),
        "qvd_object": Column("l.qvd_object"),
        "object_deleted": Column(
            "EXISTS (SELECT 1 FROM log dl WHERE dl.qvd_object = l.qvd_object AND"
            " dl.object_id = l.object_id AND dl.type_of_action = 'delete' AND dl.status = 0)",
            "bool"),
        "admin_deleted": Column("NOT EXISTS (SELECT 1 FROM administrators xa"
                                " WHERE xa.id = l.administrator_id)", "bool"),
        "superadmin": Column("l.superadmin", "bool"),
    },
    fields=("id", "admin_id", "admin_name", "tenant_id", "tenant_name", "action", "arguments",
            "object_id", "object_name", "time", "antiquity", "status", "source", "ip",
            "type_of_action", "qvd_object", "object_deleted", "admin_deleted", "superadmin"),
    filters=("id", "admin_id", "admin_name", "tenant_id", "tenant_name", "action", "arguments",
             "object_id", "object_name", "time", "status", "source", "ip", "type_of_action",
             "qvd_object", "superadmin"),
    order=("id", "admin_id", "admin_name", "tenant_id", "tenant_name", "action", "arguments",
           "object_id", "object_name", "time", "antiquity", "status", "source", "ip",
           "type_of_action", "qvd_object", "object_deleted", "admin_deleted", "superadmin"),
)

DI_TAG = Model(
    name="DI_Tag", log_object="di", id_sql="dt.id", name_sql="dt.tag", tenant_sql="o.tenant_id",
    source=("di_tags dt JOIN dis d ON d.id = dt.di_id JOIN osfs o ON o.id = d.osf_id"
            " JOIN tenants t ON t.id = o.tenant_id"),
    columns={
        "id": Column("dt.id", "int"),
        "name": Column("dt.tag"),
        "di_id": Column("dt.di_id", "int"),
        "osf_id": Column("d.osf_id", "int"),
        "tenant_id": Column("o.tenant_id", "int"),
        "tenant_name": Column("t.name"),
    },
    fields=("osf_id", "di_id", "name", "id"),
    filters=("osf_id", "di_id", "name", "id", "tenant_id", "tenant_name"),
    order=("osf_id", "di_id", "name", "id"),
)
