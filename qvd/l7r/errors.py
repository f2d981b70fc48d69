"""Errors an L7R endpoint answers with, and the bodies QVD clients expect."""

from __future__ import annotations

from typing import Optional

from qvd.http.server import Response

AUTHENTICATE = ("WWW-Authenticate", 'Basic realm="QVD"')


class HTTPError(Exception):
    """Answer ``status`` with ``message`` as a text/plain body (canned body if None)."""

    def __init__(self, status: int, message: Optional[str] = None,
                 headers: Optional[list[tuple[str, str]]] = None):
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.headers = headers or []

    def response(self) -> Response:
        if self.message is None:
            response = Response.canned(self.status)
        else:
            response = Response(self.status, self.message.encode("utf-8"))
        response.headers = self.headers + response.headers
        return response


class Unavailable(Exception):
    """A connect_to_vm failure from step 8 on: always a 503 with this message."""

    def response(self) -> Response:
        message = str(self).rstrip("\n")
        return Response(
            503, f"The requested virtual machine is not available: {message}, retry later."
            .encode("utf-8"))


def unauthorized() -> HTTPError:
    return HTTPError(401, None, [AUTHENTICATE])
