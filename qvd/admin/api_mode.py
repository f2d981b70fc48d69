"""``qa --api URL``: every ``qa`` command as ``qa4`` sends it to QVD's API.

The command line is parsed as in direct mode (``qvd.admin.command``); the
filter text becomes the API's JSON filter through the same parser
(``qvd.admin.filters``).  Changes first list the ids the filters select,
then act on those ids (qa4's flow); a change with no filter needs
``--force``.  Each call carries the cached session of ``qa login``, else the
login/password/tenant of the options or qa.conf.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from qvd.admin.base import AdminError, Result
from qvd.admin.command import Command
from qvd.admin.filters import And, Compare, FilterError, Node, Not, Or, ValueList, ValueRange, parse
from qvd.admin.remote import APIClient
from qvd.admin.when import WhenError, parse_when

EXPIRATIONS = ("expiration_soft", "expiration_hard")

OBJECTS = ("vm", "user", "host", "osf", "di", "tenant", "role", "acl", "admin", "config", "log",
           "property")
API_NAMES = {"admin": "administrator"}
LIST_ACTIONS = {"config": "config_get", "acl": "acl_get_list", "admin": "administrator_get_list"}
DEFAULT_FIELDS = {
    "vm": ("id", "name", "blocked", "user", "host", "di", "ip", "ip_in_use", "di_in_use", "state",
           "user_state"),
    "user": ("id", "name", "blocked", "number_of_vms", "number_of_vms_connected"),
    "host": ("id", "name", "blocked", "address", "frontend", "backend", "state",
             "number_of_vms_connected"),
    "osf": ("id", "name", "overlay", "user_storage", "memory", "tenant", "number_of_vms",
            "number_of_dis"),
    "di": ("id", "name", "version", "osf", "blocked", "tags"),
    "tenant": ("id", "name", "language", "block", "blocked"),
    "config": ("key", "value", "default", "is_default"),
    "admin": ("id", "name", "language", "block"),
    "role": ("id", "name", "fixed", "internal"),
    "acl": ("id", "name"),
    "log": ("time", "admin_name", "type_of_action", "qvd_object", "object_name", "status"),
    "property": ("id", "key", "description"),
}
ALIASES = {
    "vm": {"user": "user_name", "osf": "osf_name", "tag": "di_tag", "host": "host_name",
           "di": "di_name", "tenant": "tenant_name", "di_in_use": "di_name_in_use"},
    "di": {"name": "disk_image", "osf": "osf_name", "tenant": "tenant_name"},
    "config": {"value": "operative_value", "default": "default_value"},
    "host": {"ip_address": "address"},
    "user": {"tenant": "tenant_name", "login": "name"},
    "osf": {"tenant": "tenant_name"},
    "admin": {"tenant": "tenant_name"},
    "role": {"tenant": "tenant_name"},
}
ARGUMENT_ALIASES = {"vm": {"tag": "di_tag"}, "host": {"ip_address": "address"},
                    "user": {"login": "name", "passwd": "password"}}
NO_BLOCK = ("log", "acl", "config", "property", "role", "admin")


def api_filter(node: Optional[Node], aliases: dict[str, str]) -> list:
    """A ``qa`` filter tree as the API's array of alternating keys and values."""
    if node is None:
        return []
    if isinstance(node, And):
        return ["-and", api_filter(node.left, aliases) + api_filter(node.right, aliases)]
    if isinstance(node, Or):
        return ["-or", api_filter(node.left, aliases) + api_filter(node.right, aliases)]
    if isinstance(node, Not):
        return ["-not", api_filter(node.operand, aliases)]
    assert isinstance(node, Compare)
    key = aliases.get(node.key, node.key)
    op = "LIKE" if node.op == "~" else node.op
    if isinstance(node.value, ValueList):
        return [key, list(node.value.items)] if op == "=" else [key, {"!=": list(node.value.items)}]
    if isinstance(node.value, ValueRange):
        between = {"-between": [node.value.low, node.value.high]}
        return [key, between] if op == "=" else ["-not", [key, between]]
    return [key, {op: node.value}]


@dataclass
class Credentials:
    login: Optional[str] = None
    password: Optional[str] = None
    tenant: Optional[str] = None
    sid: Optional[str] = None

    def keys(self) -> dict[str, Any]:
        if self.sid:
            return {"sid": self.sid}
        if not (self.login and self.password):
            raise AdminError("not logged in: run 'qa --api URL login', or give --login and"
                             " --password (or qa.login/qa.password in qa.conf)")
        keys: dict[str, Any] = {"login": self.login, "password": self.password}
        if self.tenant:
            keys["tenant"] = self.tenant
        return keys


@dataclass
class RemoteAdmin:
    """Runs parsed ``qa`` commands through the API with one administrator's rights."""

    client: APIClient
    credentials: Credentials
    force: bool = False
    block: int = 10000
    _tenants: dict[str, int] = field(default_factory=dict)

    def call(self, action: str, path: str = "/api", **keys: Any) -> dict[str, Any]:
        answer = self.client.call({"action": action, "parameters": {"source": "CLI"},
                                   **self.credentials.keys(), **keys}, path)
        if answer.get("status") != 0:
            message = answer.get("message") or f"status {answer.get('status')}"
            for object_id, failure in sorted((answer.get("failures") or {}).items()):
                message += f"; {object_id}: {failure.get('message')}"
            raise AdminError(message)
        return answer

    # -- commands ---------------------------------------------------------------------------

    def run(self, command: Command) -> Result:
        obj = command.obj
        if obj not in OBJECTS:
            raise AdminError(f"unknown object {obj!r}: expected one of {', '.join(OBJECTS)}")
        handlers: dict[str, Callable[[Command], Result]] = {
            "get": self._get, "new": self._new, "set": self._set, "del": self._del,
            "block": self._block, "unblock": self._block, "tag": self._tag, "untag": self._tag,
            "start": self._exec, "stop": self._exec, "disconnect": self._exec,
            "disconnect_user": self._exec, "assign": self._assign, "unassign": self._assign,
            "can": self._can, "ssl": self._ssl,
        }
        if command.on_properties:
            return self._properties(command)
        return handlers[command.action](command)

    def _filters(self, command: Command, text: Optional[str] = None) -> list:
        try:
            node = parse(command.filter_text if text is None else text)
        except FilterError as e:
            raise AdminError(str(e)) from None
        return api_filter(node, ALIASES.get(command.obj, {}))

    def _list_action(self, obj: str) -> str:
        return LIST_ACTIONS.get(obj, f"{API_NAMES.get(obj, obj)}_get_list")

    def _get(self, command: Command) -> Result:
        aliases = ALIASES.get(command.obj, {})
        names = [a.value for a in command.arguments] or list(DEFAULT_FIELDS[command.obj])
        keys: dict[str, Any] = {"filters": self._filters(command),
                                "fields": [aliases.get(n, n) for n in names]}
        if command.order_by:
            keys["order_by"] = {"field": [aliases.get(n, n) for n in command.order_by],
                                "order": "-desc" if command.descending else "-asc"}
        answer = self.call(self._list_action(command.obj), **keys)
        rows = [[_cell(row.get(aliases.get(n, n))) for n in names] for row in answer["rows"]]
        return Result(answer.get("total", len(rows)), names, rows)

    def _ids(self, command: Command) -> list[int]:
        if not command.filter_text.strip() and not self.force:
            raise AdminError(f"no filter: this would change every {command.obj} you can see;"
                             " give a filter, or --force")
        answer = self.call(self._list_action(command.obj), filters=self._filters(command),
                           fields=["id"], block=self.block)
        return [row["id"] for row in answer["rows"]]

    def _act(self, command: Command, action: str, **keys: Any) -> Result:
        ids = self._ids(command)
        if not ids:
            return Result(0)
        answer = self.call(action, filters={"id": ids}, **keys)
        return Result(answer.get("total", len(ids)))

    def _named(self, command: Command) -> dict[str, Any]:
        aliases = ARGUMENT_ALIASES.get(command.obj, {})
        values = {}
        for arg in command.arguments:
            if arg.key is None:
                raise AdminError(f"expected key=value, got {arg.value!r}")
            values[aliases.get(arg.key, arg.key)] = arg.value
        return values

    def _tenant_id(self, name: str) -> int:
        if name not in self._tenants:
            rows = self.call("tenant_get_list", filters={"name": name}, fields=["id"])["rows"]
            if not rows:
                raise AdminError(f"no such tenant: {name}")
            self._tenants[name] = rows[0]["id"]
        return self._tenants[name]

    def _resolve(self, values: dict[str, Any], obj: str) -> None:
        """``user=NAME``/``osf=NAME`` (as direct mode takes them) into ``*_id``."""
        for key in (obj, f"{obj}_name"):
            if key in values:
                name = values.pop(key)
                rows = self.call(f"{obj}_get_list", filters={"name": name}, fields=["id"])["rows"]
                if len(rows) != 1:
                    raise AdminError(f"no single {obj} named {name!r}: give {obj}_id=")
                values[f"{obj}_id"] = rows[0]["id"]

    def _new(self, command: Command) -> Result:
        values = self._named(command)
        if "tenant" in values:
            values["tenant_id"] = self._tenant_id(values.pop("tenant"))
        if command.obj == "vm":
            self._resolve(values, "user")
            self._resolve(values, "osf")
        if command.obj == "di":
            self._resolve(values, "osf")
            values.setdefault("disk_image", values.pop("path", ""))
            answer = self.call("di_create", "/api/di/staging", arguments=values)
        else:
            answer = self.call(f"{API_NAMES.get(command.obj, command.obj)}_create",
                               arguments=values)
        return Result(1, created_id=answer["rows"][0].get("id"))

    def _set(self, command: Command) -> Result:
        values = self._named(command)
        for key in EXPIRATIONS if command.obj == "vm" else ():
            if key in values:  # at's formats, on this machine's clock as qa4 did
                try:
                    moment = parse_when(values[key], datetime.datetime.now())
                except WhenError as e:
                    raise AdminError(f"{key}: {e}") from None
                values[key] = "" if moment is None else moment.isoformat(" ", "seconds")
        if command.obj == "config":
            answer = self.call("config_set", arguments=values)
            return Result(answer.get("total", 1))
        return self._act(command, f"{API_NAMES.get(command.obj, command.obj)}_update",
                         arguments=values)

    def _del(self, command: Command) -> Result:
        if command.obj == "config":
            text = command.filter_text or ", ".join(f"{a.key}={a.value}" for a in command.arguments)
            answer = self.call("config_delete", filters=self._filters(command, text))
            return Result(answer.get("total", 0))
        return self._act(command, f"{API_NAMES.get(command.obj, command.obj)}_delete")

    def _block(self, command: Command) -> Result:
        if command.obj in NO_BLOCK:
            raise AdminError(f"{command.obj} objects cannot be blocked")
        return self._act(command, f"{command.obj}_update",
                         arguments={"blocked": 1 if command.action == "block" else 0})

    def _tag(self, command: Command) -> Result:
        tags = [a.value for a in command.arguments if a.key is None]
        change = "create" if command.action == "tag" else "delete"
        return self._act(command, "di_update", arguments={"__tags_changes__": {change: tags}})

    def _exec(self, command: Command) -> Result:
        if command.obj != "vm":
            raise AdminError(f"'{command.action}' is for vm only")
        action = {"start": "vm_start", "stop": "vm_stop"}.get(command.action, "vm_user_disconnect")
        return self._act(command, action)

    def _assign(self, command: Command) -> Result:
        words = [a.value for a in command.arguments if a.key is None]
        if not words:
            raise AdminError(f"usage: qa {command.obj} <filters> {command.action} acl|role|<object> ...")
        what, _, first = words[0].strip().partition(" ")
        names = [n.strip() for n in [first] + words[1:] if n.strip()]
        verb = command.action
        if command.obj == "property":
            ids = self._ids(command)
            if verb == "assign":
                if len(ids) != 1:
                    raise AdminError("the filter must select exactly one property")
                self.call(f"{what}_create_property_list", arguments={"property_id": ids[0]})
            else:
                self.call(f"{what}_delete_property_list", filters={"property_id": ids})
            return Result(len(ids))
        if what == "acl" and command.obj == "role":
            return self._act(command, "role_update", arguments={
                "__acls_changes__": {f"{verb}_acls": names}})
        if what == "role" and command.obj in ("role", "admin"):
            return self._act(command, f"{API_NAMES.get(command.obj, command.obj)}_update",
                             arguments={"__roles_changes__": {f"{verb}_roles": names}})
        raise AdminError(f"cannot {verb} {what} to {command.obj}")

    def _can(self, command: Command) -> Result:
        ids = self._ids(command)
        owner = "admin_id" if command.obj == "admin" else "role_id"
        action = "get_acls_in_admins" if command.obj == "admin" else "get_acls_in_roles"
        pattern = " ".join(a.value for a in command.arguments) or "%"
        rows: list[list[Any]] = []
        for owner_id in ids:
            answer = self.call(action, filters={owner: owner_id, "operative": 1,
                                                "acl_name": {"LIKE": pattern}},
                               fields=["id", "name"], order_by={"field": "name"})
            rows += [[owner_id, r["id"], r["name"]] for r in answer["rows"]]
        return Result(len(rows), [owner, "acl_id", "acl_name"], rows)

    def _ssl(self, command: Command) -> Result:
        answer = self.call("config_ssl", arguments=self._named(command))
        return Result(answer.get("total", 1))

    def _properties(self, command: Command) -> Result:
        if command.action == "get":
            answer = self.call(self._list_action(command.obj), filters=self._filters(command),
                               fields=["id", "properties"])
            rows = [[r["id"], p["key"], p["value"]] for r in answer["rows"]
                    for p in (r.get("properties") or {}).values()]
            return Result(len(rows), ["id", "key", "value"], rows)
        if command.action == "set":
            return self._act(command, f"{command.obj}_update", arguments={
                "__properties_changes__": {"set": {a.key: a.value for a in command.arguments}}})
        return self._act(command, f"{command.obj}_update", arguments={
            "__properties_changes__": {"delete": [a.value for a in command.arguments]}})


def _cell(value: Any) -> Any:
    if isinstance(value, list):  # DI tags
        return ", ".join(t.get("tag", "") if isinstance(t, dict) else str(t) for t in value)
    if isinstance(value, dict):
        return ", ".join(str(v) for v in value.values())
    return value
