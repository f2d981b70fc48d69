"""``qa ... new`` and DI tags: creating objects the way QVD 4's tools do.

A host gets its runtime and counter rows, a VM its runtime and counter rows
and the highest free address of the VM network, a DI a copy of its image
under ``path.storage.images`` and the version/``head``/``default`` tags.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import tempfile

from qvd.admin.base import AdminBase, AdminError, Result, to_address, to_bool, to_int
from qvd.admin.command import Command
from qvd.admin.objects import OSF, USER, ObjectKind
from qvd.config import Config, ConfigError
from qvd.db.ditags import DROP_TAGS, TAG_HOLDERS, takeover
from qvd.db.provisioning import address_range, highest_free_address


def vm_address_range(config: Config) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """(first, last) VM address: ``vm.network.ip.start`` up to broadcast - 1."""
    try:
        return address_range(config)
    except ConfigError as e:
        raise AdminError(str(e)) from None


def next_version(taken: set[str]) -> str:
    """``YYYY-MM-DD-NNN``: today (UTC) and the first counter not in ``taken``."""
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    number = 0
    while f"{today}-{number:03d}" in taken:
        number += 1
    return f"{today}-{number:03d}"


class CreationMixin(AdminBase):
    """``new`` for every object kind, and the tags of DIs."""

    def _new(self, cur, kind: ObjectKind, command: Command) -> Result:
        creators = {"vm": self._new_vm, "user": self._new_user, "host": self._new_host,
                    "osf": self._new_osf, "di": self._new_di, "tenant": self._new_tenant}
        new_id = creators[kind.name](cur, command)
        return Result(1, created_id=new_id)

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
        cur.execute("SELECT ip FROM vms WHERE ip IS NOT NULL")
        first, last = vm_address_range(self.config)
        address = highest_free_address(first, last, (row[0] for row in cur.fetchall()))
        if address is None:
            raise AdminError(f"no free VM address left between {first} and {last}")
        return address

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
        cur.execute("SELECT version FROM dis WHERE osf_id = %s", (osf_id,))
        return next_version({row[0] for row in cur.fetchall()})

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

    def _remove_images(self, names: list[str]) -> None:
        images = self.config.get("path.storage.images")
        for name in names:
            try:
                os.unlink(os.path.join(images, name))
            except FileNotFoundError:
                pass
            except OSError as e:
                raise AdminError(f"cannot remove image {name}: {e.strerror}") from None

    def _move_tag(self, cur, di_id: int, osf_id: int, tag: str) -> None:
        cur.execute(TAG_HOLDERS, (osf_id, tag))
        move = takeover(cur.fetchall(), di_id, lambda owner: AdminError(
            f"tag {tag!r} is fixed on di {owner} and cannot be moved"))
        cur.execute(DROP_TAGS, (move.drop,))
        if move.add:
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
