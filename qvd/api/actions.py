"""QVD 4's action table (reference §2.1): name, type, object, ACL patterns and,
for ``/api/ws``, the NOTIFY channels after which a list is worth re-running."""

from __future__ import annotations

from typing import Any

from qvd.api import model as m
from qvd.api.call import Action
from qvd.api.ops import admins, configs, dis, myself, objects, properties, stats, views, vms
from qvd.api.ops.listing import list_handler, state_handler
from qvd.db.channels import LOG_CREATED

# ours beside QVD 4's: *_blocked_or_unblocked, so that a list shows blocks as they happen
VM_CHANNELS = ("vm_created", "vm_deleted", "vm_changed", "user_created", "user_deleted",
               "vm_blocked_or_unblocked")
# + vm_changed (ours): a user's connected VMs change with its VMs' user_state
USER_CHANNELS = ("user_created", "user_deleted", "user_changed", "vm_created", "vm_deleted",
                 "vm_changed")
HOST_CHANNELS = ("host_created", "host_deleted", "host_changed", "vm_created", "vm_deleted",
                 "host_blocked_or_unblocked")
OSF_CHANNELS = ("vm_created", "vm_deleted", "di_created", "di_deleted", "osf_created",
                "osf_deleted", "osf_changed")
DI_CHANNELS = ("di_created", "di_deleted", "di_changed")
STATS_CHANNELS = (
    "vm_created", "vm_deleted", "vm_blocked_or_unblocked", "vm_changed", "host_created",
    "host_deleted", "host_blocked_or_unblocked", "host_changed", "user_created", "user_deleted",
    "user_blocked_or_unblocked", "user_changed", "osf_created", "osf_deleted", "osf_changed",
    "di_created", "di_deleted", "di_blocked_or_unblocked",
)
PURGE = r"^tenant\.purge\.$"


def _crud(prefix: str, model: m.Model, see: tuple[str, ...], create: Any, update: Any,
          delete: Any, acl_object: str, channels: tuple[str, ...] = (),
          delete_acls: tuple[str, ...] = (), superadmin_only: bool = False) -> list[Action]:
    return [
        Action(f"{prefix}_get_list", "list", list_handler(model), see, model, channels),
        Action(f"{prefix}_create", "create", create, (rf"^{acl_object}\.create\.",), model,
               superadmin_only=superadmin_only),
        Action(f"{prefix}_update", "update", update, (rf"^{acl_object}\.update\.",), model,
               superadmin_only=superadmin_only),
        Action(f"{prefix}_delete", "delete", delete,
               (rf"^{acl_object}\.delete\.",) + delete_acls, model,
               superadmin_only=superadmin_only),
    ]


def _property_lists(obj: str) -> list[Action]:
    model = m.object_property_list(obj)
    return [
        Action(f"{obj}_get_property_list", "list", list_handler(model),
               (rf"^{obj}\.see\.properties$",), model),
        Action(f"{obj}_create_property_list", "create", properties.create_property_list(obj),
               (r"^property\.manage\.",), model),
        Action(f"{obj}_delete_property_list", "delete", properties.delete_property_list(obj),
               (r"^property\.manage\.",), model),
    ]


_TABLE: list[Action] = [
    *_crud("vm", m.VM, (r"^(vm\.see-main\.|[^.]+\.see\.vm-list)$",), vms.vm_create,
           vms.vm_update, vms.vm_delete, "vm", VM_CHANNELS, (PURGE,)),
    Action("vm_start", "exec", vms.vm_start, (r"^vm\.update\.state$",), m.VM),
    Action("vm_stop", "exec", vms.vm_stop, (r"^(vm\.update\.state|host\.update\.stop-vms)$",),
           m.VM),
    Action("vm_user_disconnect", "exec", vms.vm_user_disconnect,
           (r"^vm\.update\.disconnect-user$",), m.VM),
    *_crud("user", m.USER, (r"^(user\.see-main\.)$", r"^tenant\.see\.user-list$"),
           objects.user_create, objects.user_update, objects.user_delete, "user", USER_CHANNELS,
           (PURGE,)),
    Action("user_get_state", "state", state_handler(m.USER), (r"^user\.see\.vm-list-state$",),
           m.USER),
    *_crud("host", m.HOST, (r"^host\.see-main\.$",), objects.host_create, objects.host_update,
           objects.host_delete, "host", HOST_CHANNELS, superadmin_only=True),
    Action("host_get_state", "state", state_handler(m.HOST), (r"^host\.see\.vm-list-state$",),
           m.HOST),
    *_crud("osf", m.OSF, (r"^osf\.see-main\.$",), objects.osf_create, objects.osf_update,
           objects.osf_delete, "osf", OSF_CHANNELS, (PURGE,)),
    *_crud("di", m.DI, (r"^(di\.see-main\.|[^.]+\.see\.di-list)$",), dis.di_create,
           dis.di_update, dis.di_delete, "di", DI_CHANNELS, (PURGE,)),
    Action("dis_in_staging", "ad_hoc", stats.dis_in_staging, (r"^di\.create\.",),
           log_object="di"),
    Action("tag_get_list", "list", list_handler(m.DI_TAG), (r"^vm\.create\.$", r"^vm\.update\.$"),
           m.DI_TAG),
    Action("tenant_get_list", "list", list_handler(m.TENANT), (r"^tenant\.see-main\.$",),
           m.TENANT),
    Action("tenant_create", "create", objects.tenant_create, (r"^tenant\.create\.",), m.TENANT),
    Action("tenant_update", "update", objects.tenant_update, (r"^(tenant\.update)\.",), m.TENANT),
    Action("tenant_delete", "delete", objects.tenant_delete, (r"^tenant\.delete\.",), m.TENANT),
    Action("mytenant_update", "update", objects.mytenant_update, (r"^config\.wat\.",), m.TENANT),
    *_crud("administrator", m.ADMINISTRATOR, (r"^administrator\.see-main\.",),
           admins.administrator_create, admins.administrator_update, admins.administrator_delete,
           "administrator", (), (PURGE,)),
    Action("myadmin_update", "update", admins.myadmin_update, (), m.ADMINISTRATOR),
    Action("current_admin_setup", "list", myself.current_admin_setup, (),
           log_object="administrator"),
    *_crud("role", m.ROLE, (r"^role\.see-main\.$",), admins.role_create, admins.role_update,
           admins.role_delete, "role", (), (PURGE,)),
    Action("acl_get_list", "list", admins.acls_in_admin,
           (r"^(role|administrator)\.see\.acl-list$",), m.ACLS_IN_ADMIN),
    Action("get_acls_in_admins", "list", admins.acls_in_admin,
           (r"^administrator\.see\.acl-list$",), m.ACLS_IN_ADMIN),
    Action("get_acls_in_roles", "list", admins.acls_in_role,
           (r"^administrator\.see\.acl-list$",), m.ACLS_IN_ROLE),
    Action("number_of_acls_in_admin", "ad_hoc",
           lambda call: admins.number_of_acls(call, "admin_id"),
           (r"^administrator\.see\.acl-list$",), log_object="acl"),
    Action("number_of_acls_in_role", "ad_hoc",
           lambda call: admins.number_of_acls(call, "role_id"),
           (r"^administrator\.see\.acl-list$",), log_object="acl"),
    Action("config_get", "list", configs.config_get, (r"^config\.qvd\.", PURGE),
           log_object="config"),
    Action("config_set", "create_or_update", configs.config_set, (r"^config\.qvd\.",),
           log_object="config"),
    Action("config_delete", "delete", configs.config_delete, (r"^config\.qvd\.", PURGE),
           log_object="config"),
    Action("config_ssl", "ad_hoc", configs.config_ssl, (r"^config\.qvd\.",),
           log_object="config"),
    Action("config_wat_get_list", "list", myself.config_wat_get_list, (r"^(config\.wat)",),
           log_object="wat_setup_by_tenant"),
    Action("config_wat_update", "update", objects.mytenant_update, (r"^(config\.wat)",),
           m.TENANT, log_object="wat_setup_by_tenant"),
    Action("property_get_list", "list", list_handler(m.PROPERTY_LIST),
           (r"^property\.see-main\.", PURGE), m.PROPERTY_LIST),
    Action("property_create", "create", properties.property_create, (r"^property\.see-main\.",),
           m.PROPERTY_LIST),
    Action("property_update", "update", properties.property_update, (r"^property\.see-main\.",),
           m.PROPERTY_LIST),
    Action("property_delete", "delete", properties.property_delete,
           (r"^property\.see-main\.", PURGE), m.PROPERTY_LIST),
    *[action for obj in properties.OBJECTS for action in _property_lists(obj)],
    Action("tenant_view_get_list", "list", list_handler(m.TENANT_VIEWS), (r"^views\.see-main\.$",),
           m.TENANT_VIEWS),
    Action("tenant_property_view_set", "create_or_update", views.view_set("tenant", "property"),
           (r"^views\.update\.",), log_object="tenant_view"),
    Action("tenant_attribute_view_set", "create_or_update", views.view_set("tenant", "attribute"),
           (r"^views\.update\.",), log_object="tenant_view"),
    Action("tenant_view_reset", "delete", views.view_reset("tenant"), (r"^views\.update\.",),
           log_object="tenant_view"),
    Action("admin_property_view_set", "create_or_update", views.view_set("admin", "property"),
           (), log_object="admin_view"),
    Action("admin_attribute_view_set", "create_or_update", views.view_set("admin", "attribute"),
           (), log_object="admin_view"),
    Action("admin_view_reset", "delete", views.view_reset("admin"), (), log_object="admin_view"),
    Action("log_get_list", "list", list_handler(m.LOG),
           (r"^(log\.see-main\.|(administrator|di|host|osf|role|tenant|user|vm)\.see\.log)$",),
           m.LOG, (LOG_CREATED,)),
    Action("qvd_objects_statistics", "multiple", stats.statistics, (r"^[^.]+\.stats\.",),
           channels=STATS_CHANNELS, log_object="vm"),
]

ACTIONS: dict[str, Action] = {action.name: action for action in _TABLE}
