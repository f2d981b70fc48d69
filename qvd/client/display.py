"""The local X server: what it tells about itself, and letting nxproxy in.

Screen size and keyboard are asked with ``xdpyinfo`` and ``xprop``
(x11-utils) so that a desktop opens at the size of the screen it is shown
on, with the keyboard the user types on; a missing tool or display just
leaves the value unknown.  nxproxy passes the X clients of the VM on
without a cookie the local server knows, so, as QVD's own client does,
``xhost +si:localuser:<us>`` lets this account's connections in.
"""

from __future__ import annotations

import getpass
import os
import re
from typing import Any, Generator, Optional

from twisted.internet import defer, utils

_DIMENSIONS = re.compile(r"dimensions:\s+(\d+x\d+) pixels")
_XKB = re.compile(r'=\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)"')


def parse_geometry(xdpyinfo: str) -> Optional[str]:
    match = _DIMENSIONS.search(xdpyinfo)
    return match.group(1) if match else None


def parse_keyboard(xprop: str) -> Optional[str]:
    """``model/layout`` (nxagent's ``keyboard=``) from ``_XKB_RULES_NAMES``."""
    match = _XKB.search(xprop)
    if not match or not match.group(2) or not match.group(3):
        return None
    layout = match.group(3).split(",")[0]
    return f"{match.group(2)}/{layout}"


def xhost_argument(family: str) -> str:
    """``command.xhost.family`` = local: any local connection; else (si) this account's."""
    return "+local:" if family.strip() == "local" else f"+si:localuser:{getpass.getuser()}"


def allow_local_user(xhost: str, family: str) -> defer.Deferred[str]:
    """Run xhost on ``$DISPLAY``; fires with its output ("" if it failed: nxproxy may still
    get in, e.g. on a server without access control)."""
    return _output(xhost, xhost_argument(family))


def _output(command: str, *args: str) -> defer.Deferred[str]:
    d = utils.getProcessOutputAndValue(command, args, env=dict(os.environ))
    d.addCallback(lambda result: result[0].decode("utf-8", "replace") if result[2] == 0 else "")
    d.addErrback(lambda _: "")
    return d


@defer.inlineCallbacks
def detect(geometry: bool, keyboard: bool) -> Generator[Any, Any, dict[str, Optional[str]]]:
    """``{"geometry": ..., "keyboard": ...}`` of ``$DISPLAY`` for those asked (None if unknown)."""
    found: dict[str, Optional[str]] = {"geometry": None, "keyboard": None}
    if not os.environ.get("DISPLAY"):
        return found
    if geometry:
        found["geometry"] = parse_geometry((yield _output("/usr/bin/xdpyinfo")))
    if keyboard:
        found["keyboard"] = parse_keyboard((yield _output("/usr/bin/xprop", "-root",
                                                          "_XKB_RULES_NAMES")))
    return found
