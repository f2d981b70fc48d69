"""Split a ``qa`` command line into object, filter, action and arguments.

``qa4`` joins its arguments with blanks and reads them as one sentence::

    qa vm "user~qvd%,state=stopped" get name, id order desc name
    qa vm new name=GuestVM,user_id=1 osf_id=1
    qa config set tenant_id=-1,key=myproperty,value="this is a value"
    qa user name=juan property del beverage

The shell has already removed the quotes of the last-but-one example, so an
argument's value runs to the next top-level comma or to the next blank that
is followed by another ``key=`` or by a keyword; quotes kept by the shell
(``value="'a, b'"``) protect commas and blanks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

ACTIONS = (
    "new", "get", "set", "del", "block", "unblock", "tag", "untag",
    "start", "stop", "disconnect", "disconnect_user", "ssl", "totp",
    "assign", "unassign", "can",  # qa --api only (roles, ACLs, properties)
)
KEYWORDS = ("order", "default", "property")
_NEXT_ARGUMENT = re.compile(r"\s+(?:\w+\s*(?:=|~|!=|<|>)|(?:%s)(?:\s|,|$))" % "|".join(KEYWORDS))


class UsageError(ValueError):
    """The command line does not have the qa4 shape."""


@dataclass
class Argument:
    key: Optional[str]
    value: str
    raw: str = field(default="", compare=False)  # as typed (starts with a blank if split at one)


@dataclass
class Command:
    obj: str
    filter_text: str
    action: str
    arguments: list[Argument] = field(default_factory=list)
    on_properties: bool = False
    order_by: list[str] = field(default_factory=list)
    descending: bool = False


def _closing(text: str, i: int) -> int:
    """Index just past the quoted run starting at ``text[i]``."""
    end = text.find(text[i], i + 1)
    if end < 0:
        raise UsageError(f"unterminated quote in: {text}")
    return end + 1


def top_level_words(text: str) -> list[tuple[int, int]]:
    """Spans of blank-separated words, ignoring blanks inside quotes."""
    spans: list[tuple[int, int]] = []
    start: Optional[int] = None
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
            i += 1
            continue
        if start is None:
            start = i
        i = _closing(text, i) if ch in "'\"" else i + 1
    if start is not None:
        spans.append((start, len(text)))
    return spans


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def split_arguments(text: str) -> list[Argument]:
    """``k=v, k2=v2 word`` into arguments (see the module docstring)."""
    pieces: list[str] = []
    current = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "'\"":
            i = _closing(text, i)
            continue
        if ch == ",":
            pieces.append(text[current:i])
            current = i = i + 1
            continue
        if ch.isspace() and _NEXT_ARGUMENT.match(text, i) and text[current:i].strip():
            pieces.append(text[current:i])
            current = i
        i += 1
    pieces.append(text[current:])
    arguments = []
    for raw in pieces:
        piece = raw.strip()
        if not piece:
            continue
        match = re.match(r"^(\w[\w.\-]*)\s*=(.*)$", piece, re.S)
        if match:
            arguments.append(Argument(match.group(1), unquote(match.group(2)), raw))
        else:
            arguments.append(Argument(None, unquote(piece), raw))
    return arguments


def _take_order(command: Command, rest: str) -> str:
    """Move a trailing ``order [asc|desc] f1, f2`` clause into ``command``."""
    for start, end in top_level_words(rest):
        if rest[start:end] != "order":
            continue
        if command.action != "get":
            raise UsageError("'order' goes with 'get' only")
        clause = [a.value for a in split_arguments(rest[end:].replace(",", " "))]
        words = " ".join(clause).split()
        if words and words[0] in ("asc", "desc"):
            command.descending = words.pop(0) == "desc"
        if not words:
            raise UsageError("'order' needs at least one field: order [asc|desc] <field>, ...")
        command.order_by = words
        return rest[:start]
    return rest


def parse_command(argv: Sequence[str]) -> Command:
    if not argv:
        raise UsageError("missing object: qa <object> [<filters>] <action> [<arguments>]")
    obj, text = argv[0], " ".join(argv[1:])
    words = top_level_words(text)
    for index, (start, end) in enumerate(words):
        word = text[start:end]
        if word not in ACTIONS:
            continue
        filter_end = start
        on_properties = False
        if index > 0 and text[slice(*words[index - 1])] == "property":
            on_properties = True
            filter_end = words[index - 1][0]
        rest = text[end:].strip()
        if re.match(r"^property(\s|,|$)", rest):
            on_properties = True
            rest = rest[len("property"):]
        command = Command(obj, text[:filter_end].strip(), word, [], on_properties)
        rest = _take_order(command, rest)
        command.arguments = split_arguments(rest)
        return command
    raise UsageError(
        f"no action in 'qa {' '.join(argv)}': expected one of {', '.join(ACTIONS)}"
    )
