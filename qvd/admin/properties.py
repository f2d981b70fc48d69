"""``qa <object> ... set|get|del property``: QVD 4's custom properties.

A key is declared once per tenant in ``properties_list`` and per object kind
in ``qvd_object_properties_list``; values live in ``<kind>_properties``.
"""

from __future__ import annotations

from qvd.admin.base import AdminBase, AdminError, Result
from qvd.admin.command import Command
from qvd.admin.objects import ObjectKind


class PropertiesMixin(AdminBase):
    """``set|get|del property`` on any object kind that has properties."""

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
