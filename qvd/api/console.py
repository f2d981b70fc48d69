"""The web administration console's files, served by ``qvd-api`` at ``/``.

The console is static HTML, CSS and JavaScript (``qvd/console/``, package data)
that does everything through ``/api`` and ``/api/ws`` like any other client: no
second server-side path to an object, no rule the API does not itself enforce.
Its files go out with headers that keep a page from being framed, sniffed or
made to run a script from anywhere else.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.web import resource, server, static

DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "console")

HEADERS = {
    b"content-security-policy": (b"default-src 'self'; img-src 'self' data:; object-src 'none';"
                                 b" base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}
TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".png": "image/png",
         ".svg": "image/svg+xml"}


class ConsoleFiles(static.File):
    """The console's directory: its files, ``index.html`` for ``/``, no listings."""

    contentTypes = {**static.File.contentTypes, **TYPES}

    def directoryListing(self) -> resource.Resource:
        return resource.NoResource("no such page")

    def render(self, request: server.Request) -> Any:
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        return super().render(request)


def files(directory: str = DIRECTORY) -> resource.Resource:
    return ConsoleFiles(directory, defaultType="application/octet-stream")
