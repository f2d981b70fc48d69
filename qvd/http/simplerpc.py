"""SimpleRPC over the QVD HTTP dialect (reference §3.1; protocols/simplerpc.md).

A call is ``GET <base>/<method>?k=v&...``.  Success and failure both answer
200 with ``application/json-simplerpc``: the JSON value, or ``"",`` and the
JSON error message; the caller parses ``[`` + body + ``]``.  Unknown methods
and non-GET requests get a 404.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Union
from urllib.parse import quote

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.http import client
from qvd.http.server import IRequestHandler, Request, Response

CONTENT_TYPE = "application/json-simplerpc"
_METHOD = re.compile(r"(\w+)\W*\Z")

Params = list[tuple[str, Optional[str]]]
Method = Callable[[Params], Any]


class RPCError(Exception):
    """A failed call; the message travels to the caller verbatim."""


def encode_result(value: Any) -> bytes:
    return (json.dumps(value) + "\r\n").encode("ascii")


def encode_error(message: str) -> bytes:
    return ('"",' + json.dumps(message) + "\r\n").encode("ascii")


def decode_body(body: bytes) -> Any:
    """The caller's rule: a second array element means failure."""
    try:
        values = json.loads(b"[" + body + b"]")
    except ValueError:
        raise RPCError(f"malformed SimpleRPC body {body[:80]!r}") from None
    if len(values) >= 2:
        raise RPCError(str(values[1]))
    return values[0] if values else None


@implementer(IRequestHandler)
class SimpleRPCHandler:
    """Dispatches ``/<anything>/<method>`` to ``methods[method](params)``."""

    log = Logger()

    def __init__(self, methods: Mapping[str, Method]):
        self.methods = dict(methods)

    def handle(self, request: Request) -> Union[Response, Deferred]:
        match = _METHOD.search(request.path)
        method = self.methods.get(match.group(1)) if match else None
        if request.method != "GET" or method is None:
            return Response.canned(404)
        d = maybeDeferred(method, request.query)
        d.addCallbacks(self._success, self._failure, errbackArgs=(match.group(1),))
        return d

    @staticmethod
    def _success(value: Any) -> Response:
        return Response(200, encode_result(value), CONTENT_TYPE)

    def _failure(self, failure: Failure, name: str) -> Response:
        if failure.check(RPCError):
            message = str(failure.value)
        else:
            self.log.failure("RPC {method} failed", failure, method=name)
            message = f"Internal error in {name}: {failure.getErrorMessage()}\n"
        return Response(200, encode_error(message), CONTENT_TYPE)


def build_query(params: Iterable[tuple[str, Optional[str]]]) -> str:
    """``k=v&...`` with RFC 3986 escaping of all but unreserved characters."""
    return "&".join(
        quote(key, safe="") if value is None else f"{quote(key, safe='')}={quote(value, safe='')}"
        for key, value in params
    )


class SimpleRPCClient:
    """Calls one SimpleRPC server (e.g. a VMA: ``SimpleRPCClient(r, ip, 3030)``)."""

    def __init__(
        self,
        reactor: interfaces.IReactorTCP,
        host: str,
        port: int,
        timeout: float,
        base: str = "/vma",
    ):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.base = base

    def call(self, method: str, params: Union[Mapping[str, str], Params] = ()) -> Deferred:
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
        query = build_query(pairs)
        target = f"{self.base}/{method}" + (f"?{query}" if query else "")
        d = client.get(self.reactor, self.host, self.port, target, self.timeout)
        return d.addCallback(self._result)

    @staticmethod
    def _result(response: client.ClientResponse) -> Any:
        if response.status != 200:
            message = response.body.decode("utf-8", "replace")
            raise RPCError(f"HTTP request failed: {response.status} - {message}")
        return decode_body(response.body)
