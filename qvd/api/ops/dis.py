"""Disk images: create (version and tags as QVD 4 sets them), update with tag
changes, delete (moving ``head``/``default`` on), publish."""

from __future__ import annotations

import datetime
import os
from typing import Any, Generator, Optional

from twisted.internet import defer, threads

from qvd.admin.creation import next_version
from qvd.api.call import Call
from qvd.api.errors import APIError
from qvd.api.model import DI
from qvd.api.ops.changes import (
    PROPERTY_NESTED, Arg, Spec, Target, apply_nested, convert, create_handler,
    creation_properties, delete_handler, nested_property_acls, update_handler,
)
from qvd.db.ditags import DROP_TAGS, TAG_HOLDERS, takeover

# Optional integer arguments kept in the di_runtimes column of the same name.
RUNTIME_SETTINGS = ("auto_publish", "expiration_time_soft", "expiration_time_hard")

SPEC = Spec(
    model=DI,
    update={"blocked": Arg("dis", "id", "blocked", "bool"),
            "description": Arg("dis", "id", "description"),
            **{name: Arg("di_runtimes", "di_id", name, "int") for name in RUNTIME_SETTINGS}},
    mandatory=("version", "disk_image", "osf_id", "blocked"),
    optional=("description", *RUNTIME_SETTINGS),
    defaults={"blocked": "0", "version": "-"},
    create_acls={"__properties__": r"^di\.create\.properties$",
                 "__tags__": r"^di\.create\.(tags|default)$"},
    nested_acls={
        **nested_property_acls("di"),
        "__tags_changes__create": r"^(di\.update\.(tags|default)|osf\.see\.di-list-default-update)$",
        "__tags_changes__delete": r"^(di\.update\.(tags|default)|osf\.see\.di-list-default-update)$",
    },
    create_nested=("__properties__", "__tags__"),
    update_nested=PROPERTY_NESTED + ("__tags_changes__create", "__tags_changes__delete"),
    properties=True,
)

UNDELETABLE_TAGS = ("head", "default")


@defer.inlineCallbacks
def osf_next_version(cursor: Any, osf_id: int) -> Generator[Any, Any, str]:
    """The default version of a new DI of the OSF (``YYYY-MM-DD-NNN``)."""
    yield cursor.execute("SELECT version FROM dis WHERE osf_id = %s", (osf_id,))
    return next_version({r[0] for r in cursor.fetchall()})


@defer.inlineCallbacks
def move_tag(cursor: Any, di_id: int, osf_id: int, tag: str,
             fixed: bool = False) -> Generator[Any, Any, None]:
    """Put ``tag`` on ``di_id``, taking it from the OSF's other DIs (7330 if fixed there)."""
    yield cursor.execute(TAG_HOLDERS, (osf_id, tag))
    move = takeover(cursor.fetchall(), di_id, lambda owner: APIError(7330, tag))
    yield cursor.execute(DROP_TAGS, (move.drop,))
    if move.add:
        yield cursor.execute("INSERT INTO di_tags (di_id, tag, fixed) VALUES (%s, %s, %s)",
                             (di_id, tag, fixed))


@defer.inlineCallbacks
def _insert(call: Call, cursor: Any, values: dict, items: list) -> Generator[Any, Any, int]:
    osf_id = convert(call, "osf_id", values["osf_id"], "int")
    yield cursor.execute("SELECT tenant_id FROM osfs WHERE id = %s", (osf_id,))
    osf = cursor.fetchone()
    if osf is None or (not call.admin.superadmin and osf[0] != call.admin.tenant_id):
        raise APIError(7110, "osf_id")
    version = values["version"]
    if version == "-":
        version = yield osf_next_version(cursor, osf_id)
    path = os.path.basename(convert(call, "disk_image", values["disk_image"], "str") or "")
    if not path:
        raise APIError(6330, "disk_image")
    yield cursor.execute(
        "INSERT INTO dis (osf_id, path, version, blocked, description) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id", (osf_id, path, convert(call, "version", version, "str"),
                          convert(call, "blocked", values["blocked"], "bool"),
                          convert(call, "description", values.get("description"), "str")))
    di_id = cursor.fetchone()[0]
    yield cursor.execute(
        "INSERT INTO di_runtimes (di_id, state, auto_publish, expiration_time_soft,"
        " expiration_time_hard) VALUES (%s, 'new', %s, %s, %s)",
        (di_id, convert(call, "auto_publish", values.get("auto_publish", 0), "int") or 0,
         convert(call, "expiration_time_soft", values.get("expiration_time_soft"), "int"),
         convert(call, "expiration_time_hard", values.get("expiration_time_hard"), "int")))
    yield cursor.execute("INSERT INTO di_tags (di_id, tag, fixed) VALUES (%s, %s, TRUE)",
                         (di_id, version))
    yield move_tag(cursor, di_id, osf_id, "head")
    yield cursor.execute("SELECT 1 FROM di_tags dt JOIN dis d ON d.id = dt.di_id"
                         " WHERE d.osf_id = %s AND dt.tag = 'default'", (osf_id,))
    if cursor.fetchone() is None:
        yield cursor.execute("INSERT INTO di_tags (di_id, tag) VALUES (%s, 'default')", (di_id,))

    @defer.inlineCallbacks
    def put_tags(name: str, value: Any) -> Generator[Any, Any, None]:
        for tag in _tags(name, value):
            yield move_tag(cursor, di_id, osf_id, tag)

    yield apply_nested(items, {
        "__properties__": creation_properties(call, cursor, DI, Target(di_id, None, osf[0])),
        "__tags__": put_tags})
    return di_id


def _tags(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise APIError(6350, name)
    return [v.strip() for v in value]


di_create = create_handler(SPEC, _insert, name_argument="disk_image")


@defer.inlineCallbacks
def _tag_changes(call: Call, cursor: Any, target: Target,
                 items: list) -> Generator[Any, Any, None]:
    yield cursor.execute("SELECT osf_id FROM dis WHERE id = %s", (target.id,))
    osf_id = cursor.fetchone()[0]
    for name, value in items:
        if name == "__tags_changes__create":
            for tag in _tags(name, value):
                yield move_tag(cursor, target.id, osf_id, tag)
        elif name == "__tags_changes__delete":
            for tag in _tags(name, value):
                yield cursor.execute("SELECT fixed FROM di_tags WHERE di_id = %s AND tag = %s",
                                     (target.id, tag))
                row = cursor.fetchone()
                if tag in UNDELETABLE_TAGS or (row and row[0]):
                    raise APIError(7340, tag)
                yield cursor.execute("DELETE FROM di_tags WHERE di_id = %s AND tag = %s",
                                     (target.id, tag))


di_update = update_handler(SPEC, after=_tag_changes)


@defer.inlineCallbacks
def _deletable(call: Call, cursor: Any, target: Target) -> Generator[Any, Any, None]:
    yield cursor.execute("SELECT 1 FROM vm_runtimes WHERE current_di_id = %s LIMIT 1", (target.id,))
    if cursor.fetchone():
        raise APIError(7320)
    yield cursor.execute("SELECT osf_id, path FROM dis WHERE id = %s", (target.id,))
    osf_id, path = cursor.fetchone()
    yield cursor.execute("SELECT tag FROM di_tags WHERE di_id = %s AND tag = ANY(%s)",
                         (target.id, list(UNDELETABLE_TAGS)))
    moving = [r[0] for r in cursor.fetchall()]
    if moving:
        yield cursor.execute(
            "SELECT d.id FROM dis d LEFT JOIN di_runtimes r ON r.di_id = d.id WHERE d.osf_id = %s"
            " AND d.id <> %s ORDER BY (r.state = 'published') DESC NULLS LAST, d.id DESC LIMIT 1",
            (osf_id, target.id))
        heir = cursor.fetchone()
        if heir:
            for tag in moving:
                yield cursor.execute("UPDATE di_tags SET di_id = %s WHERE di_id = %s AND tag = %s",
                                     (heir[0], target.id, tag))
    images = call.config.get("path.storage.images")
    yield threads.deferToThread(_unlink, os.path.join(images, os.path.basename(path)))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise APIError(1100, info=f"cannot remove the image: {e.strerror}") from None


di_delete = delete_handler(DI, before=_deletable)


@defer.inlineCallbacks
def publish(cursor: Any, di_id: int) -> Generator[Any, Any, None]:
    """Publish a ready DI: state published, and running VMs using it get their
    expirations from the DI's expiration_time_soft/hard."""
    yield cursor.execute(
        "UPDATE di_runtimes SET state = 'published', state_ts = %s,"
        " status_message = 'Published' WHERE di_id = %s",
        (int(datetime.datetime.now().timestamp()), di_id))
    yield cursor.execute(
        "UPDATE vm_runtimes vr SET"
        " vm_expiration_soft = CASE WHEN r.expiration_time_soft IS NOT NULL"
        "  THEN LOCALTIMESTAMP + r.expiration_time_soft * interval '1 second'"
        "  ELSE vr.vm_expiration_soft END,"
        " vm_expiration_hard = CASE WHEN r.expiration_time_hard IS NOT NULL"
        "  THEN LOCALTIMESTAMP + r.expiration_time_hard * interval '1 second'"
        "  ELSE vr.vm_expiration_hard END"
        " FROM di_runtimes r WHERE r.di_id = %s AND vr.current_di_id = %s"
        " AND vr.vm_state = 'running'", (di_id, di_id))


def set_state(cursor: Any, di_id: int, state: str, message: Optional[str] = None,
              error_code: Optional[int] = None) -> defer.Deferred[Any]:
    return cursor.execute(
        "UPDATE di_runtimes SET state = %s, state_ts = %s, status_message = %s, error_code = %s"
        " WHERE di_id = %s", (state, int(datetime.datetime.now().timestamp()),
                              message or state.capitalize(), error_code, di_id))
