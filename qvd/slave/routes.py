"""Requests on a slave channel: routing, the slave key, the ``Upgrade`` check.

Both ends serve the same dialect as the L7R (``qvd.http.server``) with a
small table of ``(method, path)`` routes.  Authentication is QVD's odd one:
``Authorization: Basic <slave key>`` with the raw key, not base64 (reference
§4.8): no header is a 401 with ``WWW-Authenticate: Basic realm="QVD"``, any
other value a 403.  Without a key (no session yet) nothing is accepted.
"""

from __future__ import annotations

import hmac
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence
from urllib.parse import unquote

from zope.interface import implementer

from qvd.http.server import IRequestHandler, Request, Response

REALM = 'Basic realm="QVD"'
_NAME = re.compile(r"[^/\x00]{1,255}")
_UPGRADE = re.compile(r"(qvd:[a-z]+/1\.0)(?:;\s*charset=([\w.:-]+))?", re.ASCII)


def refused(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """An error answer with a one-sentence body (the reason a user can act on)."""
    return Response(status, (message + "\n").encode("utf-8"), headers=list(headers))


def share_name(rest: str) -> Optional[str]:
    """``~/Redirected/<name>`` for a client path: its last component (``ROOT`` for ``/``)."""
    name = rest.rstrip("/").rsplit("/", 1)[-1] or "ROOT"
    return name if _NAME.fullmatch(name) and name not in (".", "..") else None


def inside(base: str, relative: str) -> Optional[str]:
    """``base/relative`` unless ``relative`` climbs out of ``base``."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts or "\x00" in relative:
        return None
    return posixpath.join(base, *parts)


@dataclass(frozen=True)
class Route:
    """``prefix`` ending in ``/`` takes the rest of the path as an argument; else exact."""

    method: str
    prefix: str
    handle: Callable[[Request, str], Any]
    auth: bool = True

    def match(self, path: str) -> Optional[str]:
        if self.prefix.endswith("/"):
            return path[len(self.prefix):] if path.startswith(self.prefix) else None
        return "" if path == self.prefix else None


def check_key(request: Request, key: Optional[str]) -> Optional[Response]:
    """None if the request carries the slave key, else the 401/403 to answer."""
    given = request.headers.get("Authorization")
    if given is None:
        return refused(401, "This needs the session's slave key.", [("WWW-Authenticate", REALM)])
    scheme, _, value = given.strip().partition(" ")
    if not key or scheme != "Basic" or not hmac.compare_digest(value.strip().encode(),
                                                               key.encode()):
        return refused(403, "Wrong slave key.")
    return None


def upgrade(request: Request, protocol: str) -> tuple[Optional[Response], Optional[str]]:
    """Checks ``Connection: Upgrade`` and ``Upgrade: <protocol>[;charset=X]``:
    (the 400 to answer or None, the charset asked for or None)."""
    match = _UPGRADE.fullmatch((request.headers.get("Upgrade") or "").strip())
    connection = (request.headers.get("Connection") or "").strip().lower()
    if connection != "upgrade" or match is None or match.group(1) != protocol:
        return refused(400, f"This needs Connection: Upgrade and Upgrade: {protocol}."), None
    return None, match.group(2)


@implementer(IRequestHandler)
class SlaveHandler:
    """Routes a request; the key comes from ``key()`` at each request (it changes
    with each connection of a client)."""

    def __init__(self, routes: Sequence[Route], key: Callable[[], Optional[str]]):
        self.routes = list(routes)
        self.key = key

    def handle(self, request: Request) -> Any:
        try:
            path = unquote(request.path, errors="strict")
        except UnicodeDecodeError:
            return refused(400, "The path is not UTF-8.")
        allowed = False
        for route in self.routes:
            rest = route.match(path)
            if rest is None:
                continue
            allowed = True
            if route.method != request.method:
                continue
            if route.auth:
                denied = check_key(request, self.key())
                if denied is not None:
                    return denied
            return route.handle(request, rest)
        if allowed:
            return refused(405, f"{request.method} is not allowed on {path}.")
        return refused(404, f"Nothing here: {path}.")
