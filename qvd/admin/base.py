"""What every ``qa`` operation shares: errors, results, value parsing, lookups.

``AdminBase`` holds the connection and configuration and the helpers the
operation mixins (creation, properties, configuration rows, VM control)
build on; ``qvd.admin.ops.Admin`` puts them together.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg2
import psycopg2.errorcodes

from qvd.admin.audit import Touched
from qvd.admin.command import Command
from qvd.admin.filters import FilterError, parse, to_sql
from qvd.admin.objects import ObjectKind
from qvd.config import Config, parse_bool
from qvd.passwords import SALT_KEY, qvd_hash


INVALID_ARGUMENT = 6330  # the API's "Invalid argument value", what most refusals are
INTERNAL, EXISTS, DEPENDENT_ITEMS = 1100, 7200, 7120


class AdminError(Exception):
    """A command that cannot be carried out; the message is shown as is, ``code`` (the
    administration API's code for it) goes to the audit row."""

    def __init__(self, message: str, code: int = INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


@dataclass
class Result:
    total: int
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    created_id: Optional[int] = None
    text: Optional[str] = None  # shown above the table (not in JSON), e.g. a QR code
    failures: dict[int, str] = field(default_factory=dict)  # objects named but not acted on


def to_bool(name: str, value: str) -> bool:
    flag = parse_bool(value)
    if flag is not None:
        return flag
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


class AdminBase:
    """The connection, the configuration and the lookups every operation uses."""

    def __init__(self, conn, config: Config):
        self.conn = conn
        self.config = config
        self.touched: list[Touched] = []  # what the running command acts on (its audit rows)

    def _where(self, kind: ObjectKind, text: str) -> tuple[str, list]:
        try:
            return to_sql(parse(text, default_key=kind.label), kind.fields, kind.name)
        except FilterError as e:
            raise AdminError(str(e)) from None

    def _ids(self, cur, kind: ObjectKind, text: str) -> list[int]:
        """The ids of the objects ``text`` selects (noted in ``touched``)."""
        where, params = self._where(kind, text)
        cur.execute(f"SELECT {kind.id_sql}, {kind.fields[kind.label].sql} FROM {kind.source}"
                    f" WHERE {where} ORDER BY {kind.id_sql}", params)
        self.touched = [Touched(object_id, name) for object_id, name in cur.fetchall()]
        return [target.id for target in self.touched]

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

    def normalise_login(self, login: str, tenant_id: int) -> str:
        login = login.strip()
        if not login:
            raise AdminError("a user's login cannot be empty")
        if self.config.get_bool("model.user.login.case-sensitive", tenant_id):
            return login
        return login.lower()

    def hash(self, password: str) -> str:
        if not password:
            raise AdminError("a password cannot be empty")
        return qvd_hash(password, self.config.get(SALT_KEY))


def filter_or_arguments(command: Command) -> str:
    """``qa config del key=x`` means the same as ``qa config key=x del``."""
    if command.arguments and command.filter_text:
        raise AdminError(f"give the filter before '{command.action}', not on both sides")
    if command.arguments:
        return ", ".join(f"{a.key}={_quote(a.value)}" if a.key else _quote(a.value)
                         for a in command.arguments)
    return command.filter_text


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def db_error(command: Command, error: psycopg2.Error) -> AdminError:
    what = f"{command.obj} {command.action}"
    diag = error.diag
    if error.pgcode == psycopg2.errorcodes.FOREIGN_KEY_VIOLATION and command.action == "del":
        return AdminError(f"{what} refused: {diag.message_detail or diag.message_primary}",
                          DEPENDENT_ITEMS)
    detail = f": {diag.message_detail}" if diag.message_detail else ""
    primary = diag.message_primary or str(error).strip().splitlines()[0]
    code = EXISTS if error.pgcode == psycopg2.errorcodes.UNIQUE_VIOLATION else INTERNAL
    return AdminError(f"{what} failed: {primary}{detail}", code)
