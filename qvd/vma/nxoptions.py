"""nxagent's options file, built from the client parameters (reference §4.5).

nxagent parses ``nx/nx,k=v,...:<display>``: a ``,`` or ``=`` or ``:`` in a
value would let a client set any option (``listen=``, ``accept=``...).  So
every client value that reaches the file must match ``[\\w/+-]+`` (ASCII),
and ``qvd.client.nxagent.extra_args`` may only set allow-listed options,
with values under the same rule.  QVD 4 passed extra_args verbatim.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from qvd.http.simplerpc import RPCError
from qvd.vma.settings import VMASettings

_SAFE = re.compile(r"[\w/+-]+", re.ASCII)
_EXTRA_ITEM = re.compile(r"([a-z]+)=([\w/+-]+)", re.ASCII)

# (nxagent option, client parameter), in the order they are written
CLIENT_OPTIONS = (
    ("keyboard", "qvd.client.keyboard"),
    ("client", "qvd.client.os"),
    ("link", "qvd.client.link"),
    ("geometry", "qvd.client.geometry"),
    ("fullscreen", "qvd.client.fullscreen"),
)
EXTRA_ARGS = "qvd.client.nxagent.extra_args"
PRINTING = "qvd.client.printing.enabled"


class InvalidParameter(RPCError):
    def __init__(self, key: str):
        super().__init__(f"invalid characters in parameter {key}\n")


def _checked(params: Mapping[str, Optional[str]], key: str) -> str:
    value = params.get(key) or ""
    if value and not _SAFE.fullmatch(value):
        raise InvalidParameter(key)
    return value


def _extra_args(value: str, allowed: frozenset[str]) -> list[tuple[str, str]]:
    items = []
    for item in value.split(","):
        match = _EXTRA_ITEM.fullmatch(item)
        if not match or match.group(1) not in allowed:
            raise InvalidParameter(EXTRA_ARGS)
        items.append((match.group(1), match.group(2)))
    return items


def build_options(params: Mapping[str, Optional[str]], settings: VMASettings) -> list[tuple[str, str]]:
    """The option pairs for a session; raises ``InvalidParameter`` first."""
    options = [(name, _checked(params, key)) for name, key in CLIENT_OPTIONS]
    options = [(name, value) for name, value in options if value]
    printing = _checked(params, PRINTING)
    extra = params.get(EXTRA_ARGS) or ""
    if settings.audio:
        options.append(("media", "1"))
    if settings.slave:
        options.append(("slave", "1"))
    if settings.loopback:
        options.append(("loopback", "1"))
    if settings.tolerancechecks:
        options.append(("tolerancechecks", settings.tolerancechecks))
    if extra:
        options.extend(_extra_args(extra, settings.extra_args_allowed))
    if settings.printing and printing not in ("", "0"):
        channel = "smb" if params.get("qvd.client.os") == "windows" else "cups"
        options.append((channel, str(2000 + settings.display)))
    return options


def options_line(options: list[tuple[str, str]], display: int) -> str:
    return "nx/nx," + ",".join(f"{k}={v}" for k, v in options) + f":{display}\n"
