"""``qa``'s audit rows in direct mode: one per object a change touched, in the ``log`` table.

Through ``--api`` the administration API audits every change itself.  Straight
on QVD-DB, ``qa`` writes the same rows (``qvd.audit``) in the change's own
transaction, so a change and its trail commit together: who (the Unix account
and machine running ``qa``, as ``administrator_name``, with no administrator
id), what (QVD 4's action names, ``vm_update``...), on which object, the
arguments (passwords, tokens and secret configuration values hidden) and the
result (0, or the API's error code; a refused VM of a filtered ``start`` gets
its own code beside the started ones).  Reads (``get``) are not audited.
"""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from typing import Any, Optional

from qvd.admin.command import Command
from qvd.audit import AuditEntry

SOURCE = "CLI"
# qa action -> (API action suffix, type_of_action), as QVD 4's API names them
VERBS = {
    "new": ("create", "create"), "set": ("update", "update"), "del": ("delete", "delete"),
    "block": ("update", "update"), "unblock": ("update", "update"),
    "tag": ("update", "update"), "untag": ("update", "update"),
    "start": ("start", "exec"), "stop": ("stop", "exec"),
    "disconnect": ("user_disconnect", "exec"), "disconnect_user": ("user_disconnect", "exec"),
    "totp": ("update", "update"), "ssl": ("ssl", "update"),
}
# config rows are set and deleted as QVD 4's API does it
CONFIG_VERBS = {"set": ("set", "create_or_update"), "del": ("delete", "delete")}
OBJECTS = {"admin": "administrator"}


@dataclass
class Touched:
    """An object a command acts on, and how that went for it."""

    id: Optional[int]
    name: Optional[str]
    status: int = 0
    reason: Optional[str] = None


def actor() -> str:
    """Who runs ``qa``: its Unix account on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def arguments(command: Command) -> dict[str, Any]:
    """The command's arguments and filter, as the audit row keeps them."""
    found: dict[str, Any] = {}
    if command.filter_text:
        found["filter"] = command.filter_text
    if command.on_properties:
        found["property"] = True
    for argument in command.arguments:
        if argument.key is None:
            found.setdefault("values", []).append(argument.value)
        else:
            found[argument.key] = argument.value
    if command.action in ("block", "unblock"):
        found["blocked"] = int(command.action == "block")
    return found


def entries(command: Command, touched: list[Touched], status: int = 0,
            created_id: Optional[int] = None, error: Optional[str] = None) -> list[AuditEntry]:
    """The rows a command leaves: one per object touched (one without an object when it
    names none), each with its own status unless the whole command failed with ``status``."""
    if command.action == "get":
        return []
    qvd_object = OBJECTS.get(command.obj, command.obj)
    verb, kind = (CONFIG_VERBS if command.obj == "config" else VERBS).get(
        command.action, (command.action, "update"))
    args = arguments(command)
    targets = list(touched)
    if created_id is not None:
        targets = [Touched(created_id, _created_name(args))]
    elif not targets:
        targets = [Touched(None, args.get("key") if command.obj == "config" else None)]
    who = actor()
    rows = []
    for target in targets:
        row_status = status or target.status
        reason = error if status else target.reason
        rows.append(AuditEntry(
            f"{qvd_object}_{verb}", kind, qvd_object, row_status, administrator_name=who,
            object_id=target.id, object_name=None if target.name is None else str(target.name),
            arguments=dict(args, error=reason) if reason else args, source=SOURCE))
    return rows


def _created_name(args: dict[str, Any]) -> Optional[str]:
    for key in ("name", "login", "disk_image", "path"):
        if key in args:
            return str(args[key])
    return None
