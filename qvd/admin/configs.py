"""``qa config``: rows of the ``configs`` and ``ssl_configs`` tables."""

from __future__ import annotations

from typing import Optional

from qvd.admin.base import AdminBase, AdminError, Result, filter_or_arguments, to_int
from qvd.admin.command import Argument, Command, unquote
from qvd.admin.objects import ObjectKind

CONFIG_KEY_MAX = 64
SSL_FILES = ("key", "cert", "ca", "crl")
ROW_NAMES = ("tenant_id", "key")


def value_to_the_end(arguments: list[Argument]) -> list[Argument]:
    """``value=`` runs on over the arguments after it that are not ``tenant_id=`` or
    ``key=``, as the manual writes values with commas (``value=auto,ldap``,
    ``value=CN=Admin,CN=Users,DC=example,DC=com``)."""
    merged: list[Argument] = []
    value: Optional[int] = None
    for argument in arguments:
        if value is not None and argument.key not in ROW_NAMES:
            glue = " " if argument.raw[:1].isspace() else ","
            text = unquote(argument.raw.strip()) if argument.raw else argument.value
            merged[value] = Argument("value", merged[value].value + glue + text)
            continue
        if argument.key == "value":
            value = len(merged)
        merged.append(argument)
    return merged


class ConfigRowsMixin(AdminBase):
    """``config set|del|ssl`` (``config get`` is the generic ``get``)."""

    def _config_set(self, cur, kind: ObjectKind, command: Command) -> Result:
        arguments = value_to_the_end(command.arguments)
        reset = [a for a in arguments if a.key is None]
        named = self._named(
            Command(command.obj, "", "set", [a for a in arguments if a.key]),
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
        text = filter_or_arguments(command)
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
