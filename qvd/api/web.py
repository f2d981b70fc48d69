"""The API's HTTP side (twisted.web): ``/api``, ``/api/info``, ``/api/logout``,
``/api/di/*``, and clear refusals for what we do not support.

Parameters come as QVD 4 reads them (reference §1.2): a JSON object body is
the whole request; otherwise query and form parameters, with ``filters``,
``arguments``, ``order_by``, ``fields`` and ``parameters`` JSON-decoded.
Every answer is HTTP 200 with a JSON body (``status`` says how it went) and
``Access-Control-Allow-Origin: *``; bodies beyond ``api.request.max_size``
are refused before they are read.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from qvd.api.dispatch import API, Answer
from qvd.api.errors import APIError, success

log = Logger()

JSON_KEYS = ("filters", "arguments", "order_by", "fields", "parameters", "url")
COOKIE = b"sid"


def _decode_booleans(value: Any) -> Any:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict):
        return {k: _decode_booleans(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_booleans(v) for v in value]
    return value


def read_params(request: server.Request) -> dict[str, Any]:
    """The request's keys; APIError 6100 when a JSON-valued parameter is not JSON."""
    body = b""
    if request.content is not None:
        request.content.seek(0)
        body = request.content.read()
    content_type = (request.getHeader(b"content-type") or b"").lower()
    if body.strip() and not content_type.startswith(
            (b"application/x-www-form-urlencoded", b"multipart/form-data")):
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            document = None
        if isinstance(document, dict):
            return document
    params: dict[str, Any] = {}
    for key, values in (request.args or {}).items():
        if values:
            params[key.decode("utf-8", "replace")] = values[-1].decode("utf-8", "replace")
    return decode_json_keys(params)


def decode_json_keys(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON-valued keys of query/form parameters, decoded (6100 if not JSON)."""
    for key in JSON_KEYS:
        if isinstance(params.get(key), str):
            try:
                params[key] = _decode_booleans(json.loads(params[key]))
            except ValueError:
                raise APIError(6100, key) from None
    return params


def peer_of(request: server.Request) -> str:
    return getattr(request.getClientAddress(), "host", "") or ""


def set_session_cookie(request: server.Request, sid: str,
                       expires: Optional[bytes] = None) -> None:
    """The ``sid`` cookie: for ``/api/`` only, out of scripts' reach, never sent by another
    site's page (a form or WebSocket there cannot act in the session: no CSRF), and no
    expiry of its own: the session's (``api.session.timeout`` after its last use) decides.
    (``expires``: only the logout's date in the past, which has the browser drop it.)"""
    request.addCookie(COOKIE, sid.encode(), path=b"/api/", httpOnly=True, secure=True,
                      sameSite="strict", expires=expires)


def send_json(request: server.Request, body: dict[str, Any], sid: Optional[str] = None) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"access-control-allow-origin", b"*")
    request.setHeader(b"cache-control", b"no-store")
    if sid is not None:
        set_session_cookie(request, sid)
    request.write(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    request.finish()


def respond(request: server.Request, work: Callable[[], defer.Deferred[Answer]]) -> int:
    """Run ``work`` and send its answer; an unexpected failure is a 1100, logged."""
    def failed(failure: Failure) -> Answer:
        if failure.check(APIError):
            return Answer(failure.value.body())
        log.failure("API request failed", failure)
        return Answer(APIError(1100).body())

    d = defer.maybeDeferred(work).addErrback(failed)
    d.addCallback(lambda answer: send_json(request, answer.body, answer.sid))
    d.addErrback(lambda f: log.failure("cannot answer an API request", f))
    return server.NOT_DONE_YET


class APIEndpoint(resource.Resource):
    """A leaf of ``/api`` serving one ``API``: GET and POST alike (QVD 4's clients use
    both) run ``answer`` through ``respond``, so every endpoint fails the same way."""

    isLeaf = True

    def __init__(self, api: API):
        super().__init__()
        self.api = api

    def render_POST(self, request: server.Request) -> int:
        return respond(request, lambda: self.answer(request))

    def render_GET(self, request: server.Request) -> int:
        return self.render_POST(request)

    def answer(self, request: server.Request) -> defer.Deferred[Answer]:
        raise NotImplementedError


class ActionResource(APIEndpoint):
    """``/api``: one action per request."""

    def answer(self, request: server.Request) -> defer.Deferred[Answer]:
        params = read_params(request)
        return self.api.process(params, peer_of(request), _cookie(request))

    def render_OPTIONS(self, request: server.Request) -> bytes:
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
        request.setHeader(b"access-control-allow-headers", b"content-type")
        return b""


def _cookie(request: server.Request) -> Optional[str]:
    value = request.getCookie(COOKIE)
    return value.decode("ascii", "replace") if value else None


class InfoResource(APIEndpoint):
    """``/api/info``: what a client needs before logging in (no authentication)."""

    @defer.inlineCallbacks
    def answer(self, request: server.Request) -> Any:
        config = self.api.config
        rows = yield self.api.database.run_query(
            "SELECT version FROM versions WHERE component = 'schema'")
        public: dict[str, Any] = {}
        for key, value in sorted(config.effective().items()):
            if key.startswith("api.public."):
                node = public
                parts = key[len("api.public."):].split(".")
                for part in parts[:-1]:
                    child = node.setdefault(part, {})
                    node = child if isinstance(child, dict) else node
                node[parts[-1]] = value
        body = {
            "status": 0,
            "server_datetime": time.asctime(time.gmtime(self.api.clock.seconds())),
            "multitenant": 1 if self.api.sessions.multitenant() else 0,
            "version": {"database": rows[0][0] if rows else None},
            "public_configuration": public,
            "auth": {"separators": list(config.get("l7r.auth.plugin.default.separators",
                                                   default=""))},
            "hypervisor": config.get("vm.hypervisor", default=""),
        }
        return Answer(body)


class LogoutResource(APIEndpoint):
    """``/api/logout``: the session ends here."""

    @defer.inlineCallbacks
    def answer(self, request: server.Request) -> Any:
        params = read_params(request)
        peer = peer_of(request)
        admin, _ = yield self.api.authenticate(params, peer, _cookie(request))
        sid = params.get("sid") or _cookie(request)
        try:
            yield self.api.sessions.logout(sid)
        except Exception:
            raise APIError(3600) from None
        set_session_cookie(request, "", expires=b"Thu, 01 Jan 1970 00:00:00 GMT")
        return Answer(success())


class Refusal(resource.Resource):
    """An endpoint we do not offer: a clear JSON answer instead of a 404 page."""

    isLeaf = True

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def render(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"access-control-allow-origin", b"*")
        body = APIError(4100, self.what, f"{self.what} is not supported by this API").body()
        return json.dumps(body).encode()


class Root(resource.Resource):
    """``/api`` and, everywhere else, ``site`` (the web console's files) if there is one."""

    def __init__(self, api: API, children: dict[bytes, resource.Resource],
                 site: Optional[resource.Resource] = None):
        super().__init__()
        self.api_resource = ApiTree(api, children)
        self.putChild(b"api", self.api_resource)
        self.site = site

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if self.site is not None:
            return self.site.getChild(path, request)
        return resource.NoResource("QVD API: use /api")


class ApiTree(resource.Resource):
    """``/api`` and everything under it."""

    def __init__(self, api: API, children: dict[bytes, resource.Resource]):
        super().__init__()
        self.action = ActionResource(api)
        self.putChild(b"info", InfoResource(api))
        self.putChild(b"logout", LogoutResource(api))
        for name, child in children.items():
            self.putChild(name, child)
        self.putChild(b"proxy", Refusal("/api/proxy"))

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if path == b"":
            return self.action
        return resource.NoResource("no such API endpoint")

    def render(self, request: server.Request) -> Any:
        return self.action.render(request)


class LimitedRequest(server.Request):
    """A request whose body may not exceed ``limit`` bytes (the upload path more)."""

    limit = 1 << 20
    upload_limit = 1 << 36
    upload_path = b"/api/di/upload"

    def _allowed(self) -> int:
        path = getattr(self.channel, "_path", b"") or b""
        return self.upload_limit if path.split(b"?")[0] == self.upload_path else self.limit

    def gotLength(self, length: Optional[int]) -> None:
        self._received = 0
        if length is not None and length > self._allowed():
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._received = getattr(self, "_received", 0) + len(data)
        if self._received > self._allowed():
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self.channel.transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\n"
                                     b"Connection: close\r\nContent-Length: 0\r\n\r\n")
        self.channel.transport.loseConnection()
