"""The operations behind ``qa``: each one a transaction on QVD-DB.

``Admin.run(command)`` executes one parsed command and returns a ``Result``
(a table for ``get``, a count for the rest).  Every failure becomes an
``AdminError`` with one sentence fit for an administrator's terminal.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import psycopg2
import psycopg2.errorcodes

from qvd.admin.command import Command
from qvd.admin.filters import FilterError, parse, to_sql
from qvd.admin.objects import CONFIG, DI, KINDS, OSF, TENANT, USER, VM, ObjectKind
from qvd.config import Config
from qvd.db import SERIALIZATION_FAILURE
from qvd.db.queries import LB_CANDIDATES
from qvd.loadbalancer import NoHostAvailable, VMInfo, candidate, choose_host
from qvd.passwords import SALT_KEY, qvd_hash

RETRIES = 5
CONFIG_KEY_MAX = 64
SSL_FILES = ("key", "cert", "ca", "crl")


class AdminError(Exception):
    """A command that cannot be carried out; the message is shown as is."""


@dataclass
class Result:
    total: int
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class Settable:
    table: str
    key: str
    column: str
    kind: str = "str"  # str | int | bool | password | login | timestamp


_SETTABLE: dict[str, dict[str, Settable]] = {
    "vm": {
        "name": Settable("vms", "id", "name"),
        "description": Settable("vms", "id", "description"),
        "di_tag": Settable("vms", "id", "di_tag"),
        "expiration_soft": Settable("vm_runtimes", "vm_id", "vm_expiration_soft", "timestamp"),
        "expiration_hard": Settable("vm_runtimes", "vm_id", "vm_expiration_hard", "timestamp"),
    },
    "user": {
        "login": Settable("users", "id", "login", "login"),
        "name": Settable("users", "id", "login", "login"),
        "password": Settable("users", "id", "password", "password"),
        "passwd": Settable("users", "id", "password", "password"),
        "description": Settable("users", "id", "description"),
        "language": Settable("users", "id", "language"),
    },
    "host": {
        "name": Settable("hosts", "id", "name"),
        "address": Settable("hosts", "id", "address", "address"),
        "description": Settable("hosts", "id", "description"),
        "frontend": Settable("hosts", "id", "frontend", "bool"),
        "backend": Settable("hosts", "id", "backend", "bool"),
    },
    "osf": {
        "name": Settable("osfs", "id", "name"),
        "description": Settable("osfs", "id", "description"),
        "memory": Settable("osfs", "id", "memory", "int"),
        "overlay": Settable("osfs", "id", "use_overlay", "bool"),
        "use_overlay": Settable("osfs", "id", "use_overlay", "bool"),
        "user_storage": Settable("osfs", "id", "user_storage_size", "int"),
        "user_storage_size": Settable("osfs", "id", "user_storage_size", "int"),
        "is_application": Settable("osfs", "id", "is_application", "bool"),
    },
    "di": {"description": Settable("dis", "id", "description")},
    "tenant": {
        "name": Settable("tenants", "id", "name"),
        "description": Settable("tenants", "id", "description"),
    },
}

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def to_bool(name: str, value: str) -> bool:
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise AdminError(f"{name} must be 1 or 0, not {value!r}")


def to_int(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise AdminError(f"{name} must be a whole number, not {value!r}") from None


def to_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise AdminError(f"address must be an IP address, not {value!r}") from None


def vm_address_range(config: Config) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """(first, last) VM address: ``vm.network.ip.start`` up to broadcast - 1."""
    start_text = config.get("vm.network.ip.start").strip()
    mask = config.get("vm.network.netmask").strip()
    try:
        start = ipaddress.IPv4Address(start_text)
        network = ipaddress.IPv4Network(f"{start_text}/{mask}", strict=False)
    except ValueError as e:
        raise AdminError(f"bad vm.network.ip.start/netmask ({start_text}/{mask}): {e}") from None
    return start, network.broadcast_address - 1


class Admin:
    """Runs parsed ``qa`` commands on one connection."""

    def __init__(self, conn, config: Config):
        self.conn = conn
        self.config = config

    # -- plumbing ------------------------------------------------------------
    def run(self, command: Command) -> Result:
        kind = KINDS.get(command.obj)
        if kind is None:
            raise AdminError(
                f"unknown object {command.obj!r}: expected one of {', '.join(KINDS)}")
        handler = self._handler(kind, command)
        for attempt in range(RETRIES):
            try:
                with self.conn, self.conn.cursor() as cur:
                    return handler(cur, kind, command)
            except psycopg2.Error as e:
                if e.pgcode == SERIALIZATION_FAILURE and attempt < RETRIES - 1:
                    continue
                raise AdminError(_db_message(command, e)) from None
        raise AssertionError("unreachable")

    def _handler(self, kind: ObjectKind, command: Command) -> Callable:
        action = command.action
        if command.on_properties:
            if kind.property_table is None:
                raise AdminError(f"{kind.name} objects have no custom properties")
            handlers = {"get": self._property_get, "set": self._property_set,
                        "del": self._property_del}
        elif kind is CONFIG:
            handlers = {"get": self._get, "set": self._config_set, "del": self._config_del,
                        "ssl": self._config_ssl}
        else:
            handlers = {"get": self._get, "new": self._new, "set": self._set, "del": self._del,
                        "block": self._block, "unblock": self._block}
            if kind is DI:
                handlers.update(tag=self._tag, untag=self._untag)
        if kind is VM and not command.on_properties:
            handlers.update(start=self._vm_start, stop=self._vm_stop,
                            disconnect=self._vm_disconnect, disconnect_user=self._vm_disconnect)
        if action not in handlers:
            raise AdminError(f"'{action}' is not an action for {kind.name}"
                             f" (use one of: {', '.join(handlers)})")
        return handlers[action]

    def _where(self, kind: ObjectKind, text: str) -> tuple[str, list]:
        try:
            return to_sql(parse(text, default_key=kind.label), kind.fields, kind.name)
        except FilterError as e:
            raise AdminError(str(e)) from None

    def _ids(self, cur, kind: ObjectKind, text: str) -> list[int]:
        where, params = self._where(kind, text)
        cur.execute(f"SELECT {kind.id_sql} FROM {kind.source} WHERE {where}"
                    f" ORDER BY {kind.id_sql}", params)
        return [row[0] for row in cur.fetchall()]

    @staticmethod
    def _named(command: Command, allowed: tuple[str, ...]) -> dict[str, str]:
        values: dict[str, str] = {}
        for arg in command.arguments:
            if arg.key is None:
                raise AdminError(f"expected key=value, got {arg.value!r}")
            if arg.key not in allowed:
                raise AdminError(f"unknown argument {arg.key!r} for '{command.obj}"
                                 f" {command.action}' (use: {', '.join(allowed)})")
            values[arg.key] = arg.value
        return values

    # -- get -----------------------------------------------------------------
    def _get(self, cur, kind: ObjectKind, command: Command) -> Result:
        names = tuple(a.value for a in command.arguments) or kind.columns
        for name in names + tuple(command.order_by):
            if name not in kind.fields:
                raise AdminError(f"unknown field {name!r} for {kind.name}"
                                 f" (known: {', '.join(kind.fields)})")
        where, params = self._where(kind, command.filter_text)
        direction = " DESC" if command.descending else ""
        order_by = command.order_by or [kind.columns[0]]
        order = " ORDER BY " + ", ".join(f"{kind.fields[n].sql}{direction}" for n in order_by)
        cur.execute(kind.select(names, where, order), params)
        rows = [list(row) for row in cur.fetchall()]
        return Result(len(rows), list(names), rows)

    # -- new -----------------------------------------------------------------
    def _new(self, cur, kind: ObjectKind, command: Command) -> Result:
        creators = {"vm": self._new_vm, "user": self._new_user, "host": self._new_host,
                    "osf": self._new_osf, "di": self._new_di, "tenant": self._new_tenant}
        new_id = creators[kind.name](cur, command)
        return Result(1, message=f"{kind.name} {new_id} created")

    @staticmethod
    def _require(values: dict[str, str], *names: str) -> str:
        for name in names:
            if values.get(name, "").strip():
                return values[name].strip()
        raise AdminError(f"missing argument {' or '.join(names)}")

    def _tenant_id(self, cur, values: dict[str, str]) -> int:
        if "tenant_id" in values:
            tenant_id = to_int("tenant_id", values["tenant_id"])
            cur.execute("SELECT id FROM tenants WHERE id = %s", (tenant_id,))
        else:
            name = values.get("tenant") or self.config.get("l7r.auth.plugin.default.tenant")
            cur.execute("SELECT id FROM tenants WHERE name = %s", (name,))
        row = cur.fetchone()
        if row is None or row[0] in (-1, 0):
            raise AdminError(f"no such tenant: {values.get('tenant_id') or values.get('tenant') or 'default'}")
        return row[0]

    def _new_tenant(self, cur, command: Command) -> int:
        values = self._named(command, ("name", "description"))
        cur.execute("INSERT INTO tenants (name, description) VALUES (%s, %s) RETURNING id",
                    (self._require(values, "name"), values.get("description")))
        return cur.fetchone()[0]

    def _new_host(self, cur, command: Command) -> int:
        values = self._named(command, ("name", "address", "description", "frontend", "backend"))
        cur.execute(
            "INSERT INTO hosts (name, address, description, frontend, backend)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (self._require(values, "name"), to_address(self._require(values, "address")),
             values.get("description"), to_bool("frontend", values.get("frontend", "1")),
             to_bool("backend", values.get("backend", "1"))))
        host_id = cur.fetchone()[0]
        cur.execute("INSERT INTO host_runtimes (host_id, state, blocked)"
                    " VALUES (%s, 'stopped', FALSE)", (host_id,))
        cur.execute("INSERT INTO host_counters (host_id) VALUES (%s)", (host_id,))
        return host_id

    def normalise_login(self, login: str, tenant_id: int) -> str:
        login = login.strip()
        if not login:
            raise AdminError("a user's login cannot be empty")
        if self.config.get_bool("model.user.login.case-sensitive", tenant_id):
            return login
        return login.lower()

    def _new_user(self, cur, command: Command) -> int:
        values = self._named(command, ("login", "name", "password", "passwd", "tenant",
                                       "tenant_id", "description", "language", "blocked"))
        tenant_id = self._tenant_id(cur, values)
        login = self.normalise_login(self._require(values, "login", "name"), tenant_id)
        password = values.get("password", values.get("passwd"))
        cur.execute(
            "INSERT INTO users (tenant_id, login, password, description, language, blocked)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (tenant_id, login, self.hash(password) if password else None,
             values.get("description"), values.get("language", "auto"),
             to_bool("blocked", values.get("blocked", "0"))))
        return cur.fetchone()[0]

    def hash(self, password: str) -> str:
        if not password:
            raise AdminError("a password cannot be empty")
        return qvd_hash(password, self.config.get(SALT_KEY))

    def _new_osf(self, cur, command: Command) -> int:
        values = self._named(command, ("name", "tenant", "tenant_id", "description", "memory",
                                       "overlay", "use_overlay", "user_storage",
                                       "user_storage_size", "is_application"))
        tenant_id = self._tenant_id(cur, values)
        storage = values.get("user_storage", values.get("user_storage_size", ""))
        overlay = values.get("overlay", values.get("use_overlay",
                                                   self.config.get("osf.default.overlay")))
        cur.execute(
            "INSERT INTO osfs (tenant_id, name, description, memory, use_overlay,"
            " user_storage_size, is_application) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (tenant_id, self._require(values, "name"), values.get("description"),
             to_int("memory", values.get("memory", self.config.get("osf.default.memory"))),
             to_bool("overlay", overlay),
             to_int("user_storage", storage) if storage.strip() else None,
             to_bool("is_application", values.get("is_application", "0"))))
        return cur.fetchone()[0]

    def _resolve(self, cur, kind: ObjectKind, values: dict[str, str], name_key: str,
                 tenant_id: Optional[int] = None) -> tuple[int, int]:
        """(id, tenant id) of the object named by ``<name_key>_id`` or ``<name_key>``."""
        id_key = f"{name_key}_id"
        if values.get(id_key, "").strip():
            where, params = f"{kind.id_sql} = %s", [to_int(id_key, values[id_key])]
            shown = values[id_key]
        else:
            shown = self._require(values, name_key, f"{name_key}_name", id_key)
            where, params = f"{kind.fields[kind.label].sql} = %s", [shown]
            if tenant_id is not None:
                where += f" AND {kind.tenant_sql} = %s"
                params.append(tenant_id)
        cur.execute(f"SELECT {kind.id_sql}, {kind.tenant_sql} FROM {kind.source}"
                    f" WHERE {where}", params)
        rows = cur.fetchall()
        if not rows:
            raise AdminError(f"no such {kind.name}: {shown}")
        if len(rows) > 1:
            raise AdminError(f"{kind.name} {shown!r} exists in several tenants:"
                             f" give {id_key}= instead")
        return rows[0][0], rows[0][1]

    def _new_vm(self, cur, command: Command) -> int:
        values = self._named(command, ("name", "user", "user_name", "user_id", "osf",
                                       "osf_name", "osf_id", "di_tag", "description", "ip",
                                       "storage"))
        user_id, tenant_id = self._resolve(cur, USER, values, "user")
        osf_id, osf_tenant = self._resolve(
            cur, OSF, values, "osf", None if values.get("osf_id") else tenant_id)
        if osf_tenant != tenant_id:
            raise AdminError(f"osf {osf_id} belongs to another tenant than user {user_id}")
        ip = to_address(values["ip"]) if values.get("ip") else self._free_ip(cur)
        cur.execute(
            "INSERT INTO vms (name, user_id, osf_id, di_tag, ip, storage, description)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (self._require(values, "name"), user_id, osf_id, values.get("di_tag", "default"),
             ip, values.get("storage", ""), values.get("description")))
        vm_id = cur.fetchone()[0]
        cur.execute("INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked)"
                    " VALUES (%s, 'stopped', 'disconnected', FALSE)", (vm_id,))
        cur.execute("INSERT INTO vm_counters (vm_id) VALUES (%s)", (vm_id,))
        return vm_id

    def _free_ip(self, cur) -> str:
        """The highest free VM address, as QVD 4 allocates them."""
        first, last = vm_address_range(self.config)
        cur.execute("SELECT ip FROM vms WHERE ip IS NOT NULL")
        used = {row[0] for row in cur.fetchall()}
        address = last
        while address >= first:
            if str(address) not in used:
                return str(address)
            address -= 1
        raise AdminError(f"no free VM address left between {first} and {last}")

    def _new_di(self, cur, command: Command) -> int:
        values = self._named(command, ("disk_image", "path", "osf", "osf_name", "osf_id",
                                       "version", "description"))
        source = self._require(values, "disk_image", "path")
        if not os.path.isabs(source):
            source = os.path.join(self.config.get("path.storage.staging"), source)
        if not os.path.isfile(source):
            raise AdminError(f"disk image {source} does not exist")
        osf_id, _ = self._resolve(cur, OSF, values, "osf")
        version = values.get("version") or self._next_version(cur, osf_id)
        cur.execute("INSERT INTO dis (osf_id, path, version, description)"
                    " VALUES (%s, '', %s, %s) RETURNING id",
                    (osf_id, version, values.get("description")))
        di_id = cur.fetchone()[0]
        name = f"{di_id}-{os.path.basename(source)}"
        cur.execute("UPDATE dis SET path = %s WHERE id = %s", (name, di_id))
        cur.execute("INSERT INTO di_runtimes (di_id, state) VALUES (%s, 'published')", (di_id,))
        self._tag_new_di(cur, di_id, osf_id, version)
        self._copy_image(source, name)
        return di_id

    @staticmethod
    def _next_version(cur, osf_id: int) -> str:
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        cur.execute("SELECT version FROM dis WHERE osf_id = %s AND version LIKE %s",
                    (osf_id, today + "-%"))
        taken = {row[0] for row in cur.fetchall()}
        number = 0
        while f"{today}-{number:03d}" in taken:
            number += 1
        return f"{today}-{number:03d}"

    def _tag_new_di(self, cur, di_id: int, osf_id: int, version: str) -> None:
        """Version (fixed), ``head`` (moved here), ``default`` if the OSF has none."""
        cur.execute("INSERT INTO di_tags (di_id, tag, fixed) VALUES (%s, %s, TRUE)",
                    (di_id, version))
        self._move_tag(cur, di_id, osf_id, "head")
        cur.execute("SELECT 1 FROM di_tags dt JOIN dis d ON d.id = dt.di_id"
                    " WHERE d.osf_id = %s AND dt.tag = 'default'", (osf_id,))
        if cur.fetchone() is None:
            cur.execute("INSERT INTO di_tags (di_id, tag) VALUES (%s, 'default')", (di_id,))

    def _copy_image(self, source: str, name: str) -> None:
        images = self.config.get("path.storage.images")
        try:
            os.makedirs(images, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=".copying-", dir=images)
            os.close(fd)
            shutil.copyfile(source, partial)
            os.chmod(partial, 0o644)
            os.replace(partial, os.path.join(images, name))
        except OSError as e:
            raise AdminError(f"cannot copy {source} into {images}: {e.strerror}") from None

    # -- tags ----------------------------------------------------------------
    def _move_tag(self, cur, di_id: int, osf_id: int, tag: str) -> None:
        cur.execute("SELECT dt.id, dt.di_id, dt.fixed FROM di_tags dt JOIN dis d"
                    " ON d.id = dt.di_id WHERE d.osf_id = %s AND dt.tag = %s",
                    (osf_id, tag))
        for tag_id, owner, fixed in cur.fetchall():
            if owner == di_id:
                return
            if fixed:
                raise AdminError(f"tag {tag!r} is fixed on di {owner} and cannot be moved")
            cur.execute("DELETE FROM di_tags WHERE id = %s", (tag_id,))
        cur.execute("INSERT INTO di_tags (di_id, tag) VALUES (%s, %s)", (di_id, tag))

    def _tags(self, command: Command) -> list[str]:
        tags = [a.value.strip() for a in command.arguments if a.key is None and a.value.strip()]
        if not tags or any(a.key for a in command.arguments):
            raise AdminError(f"usage: qa di <filters> {command.action} <tag>[, <tag> ...]")
        return tags

    def _tag(self, cur, kind: ObjectKind, command: Command) -> Result:
        tags = self._tags(command)
        ids = self._ids(cur, kind, command.filter_text)
        for di_id in ids:
            cur.execute("SELECT osf_id FROM dis WHERE id = %s", (di_id,))
            osf_id = cur.fetchone()[0]
            for tag in tags:
                self._move_tag(cur, di_id, osf_id, tag)
        return Result(len(ids))

    def _untag(self, cur, kind: ObjectKind, command: Command) -> Result:
        tags = self._tags(command)
        ids = self._ids(cur, kind, command.filter_text)
        cur.execute("SELECT di_id, tag FROM di_tags WHERE di_id = ANY(%s) AND tag = ANY(%s)"
                    " AND fixed", (ids, tags))
        fixed = cur.fetchone()
        if fixed:
            raise AdminError(f"tag {fixed[1]!r} is fixed on di {fixed[0]} and cannot be removed")
        cur.execute("DELETE FROM di_tags WHERE di_id = ANY(%s) AND tag = ANY(%s)", (ids, tags))
        return Result(len(ids))

    # -- set / del / block ---------------------------------------------------------
    def _set(self, cur, kind: ObjectKind, command: Command) -> Result:
        settable = _SETTABLE[kind.name]
        values = self._named(command, tuple(settable))
        if not values:
            raise AdminError(f"nothing to set: qa {kind.name} <filters> set key=value, ...")
        ids = self._ids(cur, kind, command.filter_text)
        for name, raw in values.items():
            target = settable[name]
            for object_id in ids:
                sql_value, value = self._set_value(cur, target, name, raw, object_id)
                cur.execute(f"UPDATE {target.table} SET {target.column} = {sql_value}"
                            f" WHERE {target.key} = %s", (*value, object_id))
        return Result(len(ids))

    def _set_value(self, cur, target: Settable, name: str, raw: str,
                   object_id: int) -> tuple[str, tuple]:
        """SQL expression and parameters for one new column value."""
        if target.kind == "timestamp":
            word = raw.strip().lower()
            if word == "now":
                return "now()", ()
            if word == "tomorrow":
                return "now() + interval '1 day'", ()
            if word in ("", "none", "never"):
                return "NULL", ()
            try:
                return "%s", (datetime.datetime.fromisoformat(raw.strip()),)
            except ValueError:
                raise AdminError(f"{name} must be now, tomorrow or a date/time"
                                 f" like 2026-12-31T18:00, not {raw!r}") from None
        if target.kind == "int":
            return "%s", (to_int(name, raw),)
        if target.kind == "bool":
            return "%s", (to_bool(name, raw),)
        if target.kind == "address":
            return "%s", (to_address(raw),)
        if target.kind == "password":
            return "%s", (self.hash(raw),)
        if target.kind == "login":
            cur.execute("SELECT tenant_id FROM users WHERE id = %s", (object_id,))
            return "%s", (self.normalise_login(raw, cur.fetchone()[0]),)
        return "%s", (raw,)

    def _del(self, cur, kind: ObjectKind, command: Command) -> Result:
        text = _filter_or_arguments(command)
        ids = self._ids(cur, kind, text)
        if kind is VM:
            cur.execute("SELECT vm_id FROM vm_runtimes WHERE vm_id = ANY(%s)"
                        " AND vm_state <> 'stopped'", (ids,))
            running = [row[0] for row in cur.fetchall()]
            if running:
                raise AdminError(f"vm {running[0]} is not stopped; stop it before deleting it")
        if kind is TENANT and set(ids) & {-1, 0}:
            raise AdminError("tenants -1 and 0 are part of the schema and cannot be deleted")
        if kind is DI:
            cur.execute("SELECT path FROM dis WHERE id = ANY(%s)", (ids,))
            images = [row[0] for row in cur.fetchall()]
        cur.execute(f"DELETE FROM {kind.table} WHERE id = ANY(%s)", (ids,))
        if kind is DI:
            self._remove_images(images)
        return Result(len(ids))

    def _remove_images(self, names: list[str]) -> None:
        images = self.config.get("path.storage.images")
        for name in names:
            try:
                os.unlink(os.path.join(images, name))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise AdminError(f"cannot remove image {name}: {e.strerror}") from None

    def _block(self, cur, kind: ObjectKind, command: Command) -> Result:
        if kind.blocked_in is None:
            raise AdminError(f"{kind.name} objects cannot be blocked")
        table, key = kind.blocked_in
        ids = self._ids(cur, kind, _filter_or_arguments(command))
        cur.execute(f"UPDATE {table} SET blocked = %s WHERE {key} = ANY(%s)",
                    (command.action == "block", ids))
        return Result(len(ids))

    # -- vm start / stop / disconnect (the HKD and the L7R act on these) --------------
    def _vm_rows(self, cur, kind: ObjectKind, command: Command) -> list[tuple]:
        """(id, vm_state, host_id, user_state, l7r_host_id, name, user_id, osf_id, di_tag),
        locked, of the VMs the command names."""
        ids = self._ids(cur, kind, _filter_or_arguments(command))
        cur.execute("SELECT v.id, r.vm_state, r.host_id, r.user_state, r.l7r_host_id, v.name,"
                    " v.user_id, v.osf_id, v.di_tag FROM vms v JOIN vm_runtimes r"
                    " ON r.vm_id = v.id WHERE v.id = ANY(%s) ORDER BY v.id FOR UPDATE OF r",
                    (ids,))
        return cur.fetchall()

    @staticmethod
    def _acting_on(rows: list[tuple], fits: Callable[[tuple], bool], refusal: str) -> list[tuple]:
        """The rows the action applies to; an error if it applies to none of those named.

        ``qa vm start`` (any filter) starts the stopped VMs among those it names,
        as qa4 does; naming only VMs in the wrong state is the error.
        """
        chosen = [row for row in rows if fits(row)]
        if rows and not chosen:
            vm_id, state, _, user_state = rows[0][:4]
            raise AdminError(refusal.format(vm_id=vm_id, state=state, user_state=user_state))
        return chosen

    def _vm_start(self, cur, kind: ObjectKind, command: Command) -> Result:
        """``start`` for stopped VMs, on a host chosen by the load balancer if they have none."""
        rows = self._acting_on(self._vm_rows(cur, kind, command), lambda r: r[1] == "stopped",
                               "vm {vm_id} is {state}: only a stopped vm can be started")
        for vm_id, _, host_id, _, _, name, user_id, osf_id, di_tag in rows:
            if host_id is None:
                cur.execute(LB_CANDIDATES)
                try:
                    host_id = choose_host(self.config, VMInfo(vm_id, name, user_id, osf_id, di_tag),
                                          [candidate(row) for row in cur.fetchall()])
                except NoHostAvailable as e:
                    raise AdminError(f"vm {vm_id} cannot start: {e}") from None
            cur.execute("UPDATE vm_runtimes SET host_id = %s, vm_cmd = 'start' WHERE vm_id = %s",
                        (host_id, vm_id))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))
        return Result(len(rows))

    def _vm_stop(self, cur, kind: ObjectKind, command: Command) -> Result:
        rows = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda r: r[1] in ("starting", "running", "debugging") and r[2] is not None,
            "vm {vm_id} is {state}: only a starting, running or debugging vm can be stopped")
        for vm_id, _, host_id, *_ in rows:
            cur.execute("UPDATE vm_runtimes SET vm_cmd = 'stop' WHERE vm_id = %s", (vm_id,))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_vm_on_host{host_id}",))
        return Result(len(rows))

    def _vm_disconnect(self, cur, kind: ObjectKind, command: Command) -> Result:
        """Ask the L7R holding the session to close it (QVD 4's API did not notify)."""
        rows = self._acting_on(
            self._vm_rows(cur, kind, command),
            lambda r: r[3] in ("connecting", "connected") and r[4] is not None,
            "vm {vm_id} has no user connected (user state {user_state})")
        for vm_id, _, _, _, l7r_host_id, *_ in rows:
            cur.execute("UPDATE vm_runtimes SET user_cmd = 'abort' WHERE vm_id = %s", (vm_id,))
            cur.execute("SELECT pg_notify(%s, '')", (f"qvd_cmd_for_user_on_host{l7r_host_id}",))
        return Result(len(rows))

    # -- properties ------------------------------------------------------------------
    def _property_set(self, cur, kind: ObjectKind, command: Command) -> Result:
        pairs = [(a.key, a.value) for a in command.arguments]
        if not pairs or any(key is None for key, _ in pairs):
            raise AdminError(f"usage: qa {kind.name} <filters> set property key=value, ...")
        ids = self._ids(cur, kind, command.filter_text)
        for object_id in ids:
            cur.execute(f"SELECT {kind.tenant_sql} FROM {kind.source} WHERE {kind.id_sql} = %s",
                        (object_id,))
            tenant_id = cur.fetchone()[0]
            for key, value in pairs:
                property_id = self._declare_property(cur, kind, key, tenant_id)
                cur.execute(
                    f"INSERT INTO {kind.property_table} ({kind.property_key}, property_id, value)"
                    f" VALUES (%s, %s, %s) ON CONFLICT ({kind.property_key}, property_id)"
                    " DO UPDATE SET value = EXCLUDED.value", (object_id, property_id, value))
        return Result(len(ids))

    @staticmethod
    def _declare_property(cur, kind: ObjectKind, key: str, tenant_id: int) -> int:
        """The qvd_object_properties_list id declaring ``key`` for this kind and tenant."""
        cur.execute("INSERT INTO properties_list (key, tenant_id) VALUES (%s, %s)"
                    " ON CONFLICT (key, tenant_id) DO NOTHING", (key, tenant_id))
        cur.execute("SELECT id FROM properties_list WHERE key = %s AND tenant_id = %s",
                    (key, tenant_id))
        list_id = cur.fetchone()[0]
        cur.execute("INSERT INTO qvd_object_properties_list (property_id, qvd_object)"
                    " VALUES (%s, %s) ON CONFLICT (property_id, qvd_object) DO NOTHING",
                    (list_id, kind.name))
        cur.execute("SELECT id FROM qvd_object_properties_list WHERE property_id = %s"
                    " AND qvd_object = %s", (list_id, kind.name))
        return cur.fetchone()[0]

    def _property_get(self, cur, kind: ObjectKind, command: Command) -> Result:
        where, params = self._where(kind, command.filter_text)
        label = kind.fields[kind.label].sql
        cur.execute(
            f"SELECT {kind.id_sql}, {label}, pl.key, xp.value FROM {kind.property_table} xp"
            " JOIN qvd_object_properties_list q ON q.id = xp.property_id"
            " JOIN properties_list pl ON pl.id = q.property_id"
            f" JOIN {kind.source} ON {kind.id_sql} = xp.{kind.property_key}"
            f" WHERE {where} ORDER BY {kind.id_sql}, pl.key", params)
        rows = [list(row) for row in cur.fetchall()]
        return Result(len(rows), ["id", kind.label, "key", "value"], rows)

    def _property_del(self, cur, kind: ObjectKind, command: Command) -> Result:
        keys = [a.value for a in command.arguments if a.key is None]
        if not keys or len(keys) != len(command.arguments):
            raise AdminError(f"usage: qa {kind.name} <filters> del property key[, key ...]")
        ids = self._ids(cur, kind, command.filter_text)
        cur.execute(
            f"DELETE FROM {kind.property_table} xp USING qvd_object_properties_list q,"
            " properties_list pl WHERE q.id = xp.property_id AND pl.id = q.property_id"
            f" AND xp.{kind.property_key} = ANY(%s) AND pl.key = ANY(%s)", (ids, keys))
        return Result(cur.rowcount)

    # -- config -------------------------------------------------------------------------
    def _config_set(self, cur, kind: ObjectKind, command: Command) -> Result:
        reset = [a for a in command.arguments if a.key is None]
        named = self._named(
            Command(command.obj, "", "set", [a for a in command.arguments if a.key]),
            ("tenant_id", "key", "value"))
        if reset and (len(reset) > 1 or reset[0].value != "default"):
            raise AdminError("usage: qa config set [tenant_id=N,]key=K,value=V"
                             " (or key=K default to return to the default)")
        if reset and "value" in named:
            raise AdminError("give either value=... or default, not both")
        key = self._require(named, "key")
        if len(key) > CONFIG_KEY_MAX:
            raise AdminError(f"configuration key {key!r} is longer than {CONFIG_KEY_MAX}"
                             " characters; QVD-DB cannot hold it: set it in node.conf")
        tenant_id = to_int("tenant_id", named.get("tenant_id", "-1"))
        if reset:
            cur.execute("DELETE FROM configs WHERE tenant_id = %s AND key = %s", (tenant_id, key))
            return Result(cur.rowcount)
        if "value" not in named:
            raise AdminError("missing argument value")
        cur.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,))
        if cur.fetchone() is None:
            raise AdminError(f"no such tenant: {tenant_id}")
        cur.execute("INSERT INTO configs (tenant_id, key, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT (key, tenant_id) DO UPDATE SET value = EXCLUDED.value",
                    (tenant_id, key, named["value"]))
        return Result(1)

    def _config_del(self, cur, kind: ObjectKind, command: Command) -> Result:
        text = _filter_or_arguments(command)
        if not text:
            raise AdminError("refusing to delete every configuration row:"
                             " name them, e.g. qa config del key=my.key")
        where, params = self._where(kind, text)
        cur.execute(f"DELETE FROM configs c WHERE {where}", params)
        return Result(cur.rowcount)

    def _config_ssl(self, cur, kind: ObjectKind, command: Command) -> Result:
        values = self._named(command, SSL_FILES)
        if "key" not in values or "cert" not in values:
            raise AdminError("usage: qa config ssl key=FILE,cert=FILE[,ca=FILE][,crl=FILE]")
        for name, path in values.items():
            try:
                with open(path, encoding="ascii") as f:
                    pem = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise AdminError(f"cannot read {name} file {path}: {e}") from None
            if "-----BEGIN " not in pem:
                raise AdminError(f"{path} is not a PEM file")
            cur.execute("INSERT INTO ssl_configs (key, value) VALUES (%s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (f"l7r.ssl.{name}", pem))
        return Result(len(values))


def _filter_or_arguments(command: Command) -> str:
    """``qa config del key=x`` means the same as ``qa config key=x del``."""
    if command.arguments and command.filter_text:
        raise AdminError(f"give the filter before '{command.action}', not on both sides")
    if command.arguments:
        return ", ".join(f"{a.key}={_quote(a.value)}" if a.key else _quote(a.value)
                         for a in command.arguments)
    return command.filter_text


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def _db_message(command: Command, error: psycopg2.Error) -> str:
    what = f"{command.obj} {command.action}"
    diag = error.diag
    if error.pgcode == psycopg2.errorcodes.FOREIGN_KEY_VIOLATION and command.action == "del":
        return f"{what} refused: {diag.message_detail or diag.message_primary}"
    detail = f": {diag.message_detail}" if diag.message_detail else ""
    primary = diag.message_primary or str(error).strip().splitlines()[0]
    return f"{what} failed: {primary}{detail}"
