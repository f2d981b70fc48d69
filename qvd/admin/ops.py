"""The operations behind ``qa``: each one a transaction on QVD-DB.

``Admin.run(command)`` executes one parsed command and returns a ``Result``
(a table for ``get``, a count for the rest).  Every failure becomes an
``AdminError`` with one sentence fit for an administrator's terminal.
Reading, changing, deleting and blocking objects are here; creation,
properties, configuration rows and VM commands have modules of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import psycopg2

from qvd import audit
from qvd.admin.audit import entries
from qvd.admin.base import (
    AdminError, Result, db_error, filter_or_arguments, to_address, to_bool, to_int,
)
from qvd.admin.command import Command
from qvd.admin.configs import ConfigRowsMixin
from qvd.admin.creation import CreationMixin
from qvd.admin.objects import CONFIG, DI, KINDS, LOG, TENANT, USER, VM, ObjectKind
from qvd.admin.properties import PropertiesMixin
from qvd.admin.totp import TOTPEnrolmentMixin
from qvd.admin.vmcontrol import VMControlMixin
from qvd.admin.when import WhenError, parse_when
from qvd.db import SERIALIZATION_FAILURE

RETRIES = 5


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


class Admin(CreationMixin, PropertiesMixin, ConfigRowsMixin, VMControlMixin, TOTPEnrolmentMixin):
    """Runs parsed ``qa`` commands on one connection."""

    def run(self, command: Command) -> Result:
        kind = KINDS.get(command.obj)
        if kind is None:
            raise AdminError(
                f"unknown object {command.obj!r}: expected one of {', '.join(KINDS)}")
        handler = self._handler(kind, command)
        try:
            return self._audited(handler, kind, command)
        except AdminError as e:
            self._audit_failure(command, e)
            raise

    def _audited(self, handler: Callable, kind: ObjectKind, command: Command) -> Result:
        """The command and its audit rows in one transaction (re-run on 40001)."""
        for attempt in range(RETRIES):
            self.touched = []
            try:
                with self.conn, self.conn.cursor() as cur:
                    result = handler(cur, kind, command)
                    audit.write_now(cur, entries(command, self.touched,
                                                 created_id=result.created_id))
                    return result
            except psycopg2.Error as e:
                if e.pgcode == SERIALIZATION_FAILURE and attempt < RETRIES - 1:
                    continue
                raise db_error(command, e) from None
        raise AssertionError("unreachable")

    def _audit_failure(self, command: Command, error: AdminError) -> None:
        """A refused change leaves a row too (its own transaction: the change's rolled back)."""
        rows = entries(command, self.touched, status=error.code, error=str(error))
        if not rows:
            return
        try:
            with self.conn, self.conn.cursor() as cur:
                audit.write_now(cur, rows)
        except psycopg2.Error:
            pass  # the refusal is what the administrator needs to see

    def _handler(self, kind: ObjectKind, command: Command) -> Callable:
        action = command.action
        if command.on_properties:
            if kind.property_table is None:
                raise AdminError(f"{kind.name} objects have no custom properties")
            handlers = {"get": self._property_get, "set": self._property_set,
                        "del": self._property_del}
        elif kind is LOG:
            handlers = {"get": self._get}  # the audit trail is read-only
        elif kind is CONFIG:
            handlers = {"get": self._get, "set": self._config_set, "del": self._config_del,
                        "ssl": self._config_ssl}
        else:
            handlers = {"get": self._get, "new": self._new, "set": self._set, "del": self._del,
                        "block": self._block, "unblock": self._block}
            if kind is DI:
                handlers.update(tag=self._tag, untag=self._untag)
        if kind is USER and not command.on_properties:
            handlers.update(totp=self._totp)
        if kind is VM and not command.on_properties:
            handlers.update(start=self._vm_start, stop=self._vm_stop,
                            disconnect=self._vm_disconnect, disconnect_user=self._vm_disconnect)
        if action not in handlers:
            raise AdminError(f"'{action}' is not an action for {kind.name}"
                             f" (use one of: {', '.join(handlers)})")
        return handlers[action]

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

    def _set(self, cur, kind: ObjectKind, command: Command) -> Result:
        settable = _SETTABLE[kind.name]
        values = self._named(command, tuple(settable))
        if not values:
            raise AdminError(f"nothing to set: qa {kind.name} <filters> set key=value, ...")
        ids = self._ids(cur, kind, command.filter_text)
        for name, raw in values.items():
            target = settable[name]
            # a date is the same for every object: read QVD-DB's clock once, not per object
            moment = (self._moment(cur, name, raw) if target.kind == "timestamp" and ids
                      else None)
            for object_id in ids:
                sql_value, value = moment or self._set_value(cur, target, name, raw, object_id)
                cur.execute(f"UPDATE {target.table} SET {target.column} = {sql_value}"
                            f" WHERE {target.key} = %s", (*value, object_id))
        return Result(len(ids))

    @staticmethod
    def _moment(cur, name: str, raw: str) -> tuple[str, tuple]:
        """SQL expression and parameters for a date column, read by ``at``'s rules."""
        cur.execute("SELECT LOCALTIMESTAMP")  # QVD-DB's clock: the HKD's too
        try:
            moment = parse_when(raw, cur.fetchone()[0])
        except WhenError as e:
            raise AdminError(f"{name}: {e}") from None
        return ("NULL", ()) if moment is None else ("%s", (moment,))

    def _set_value(self, cur, target: Settable, name: str, raw: str,
                   object_id: int) -> tuple[str, tuple]:
        """SQL expression and parameters for one new column value (a date: ``_moment``)."""
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
        text = filter_or_arguments(command)
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

    def _block(self, cur, kind: ObjectKind, command: Command) -> Result:
        if kind.blocked_in is None:
            raise AdminError(f"{kind.name} objects cannot be blocked")
        table, key = kind.blocked_in
        ids = self._ids(cur, kind, filter_or_arguments(command))
        cur.execute(f"UPDATE {table} SET blocked = %s WHERE {key} = ANY(%s)",
                    (command.action == "block", ids))
        return Result(len(ids))
