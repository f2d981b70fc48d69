"""``/api/ws``: a list that keeps itself up to date (reference §7.5).

The client opens ``wss://host/api/ws?sid=..&action=<action>&filters=..&fields=..``
(query keys decoded as for ``/api``); the server answers with the action's
response at once and again whenever one of the action's NOTIFY channels
fires for the client's tenant (superadmins: any tenant; a payload without
``tenant_id``: everybody).  Unlike QVD 4, which looked every 2 s, a burst of
notifications is answered once, ``api.ws.delay`` seconds (0.25) after the
first.  Any message from the client is answered ``AKN`` 25 s later (the
WAT's keep-alive).
"""

from __future__ import annotations

import json
from typing import Any, Optional
from urllib.parse import unquote

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from qvd.api.call import Call
from qvd.api.dispatch import API
from qvd.api.errors import APIError
from qvd.api.web import decode_json_keys

log = Logger()

DELAY_KEY = "api.ws.delay"
KEEPALIVE = 25.0


def query_params(params: dict[str, list[str]]) -> dict[str, Any]:
    return decode_json_keys({k: v[-1] for k, v in params.items() if v})


def tenant_of(payload: str) -> Optional[int]:
    """``tenant_id`` of a ``k=v;k=v`` payload, or None when it names none."""
    for part in payload.split(";"):
        key, _, value = part.partition("=")
        if key.strip() == "tenant_id":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class LiveList(WebSocketServerProtocol):
    """One subscription: an authenticated call re-run after relevant NOTIFYs."""

    api: API
    call: Optional[Call] = None
    params: dict[str, Any]
    pending: Optional[IDelayedCall] = None
    keepalive: Optional[IDelayedCall] = None

    def onConnect(self, request: Any) -> None:
        self.params = {}
        try:
            self.params = query_params(request.params)
        except APIError:
            pass
        cookies = request.headers.get("cookie", "")
        self.cookie_sid = None
        for item in cookies.split(";"):
            name, _, value = item.strip().partition("=")
            if name == "sid":
                self.cookie_sid = unquote(value)
        self.peer_address = request.peer.split(":")[1] if request.peer.count(":") >= 2 else ""

    def onOpen(self) -> None:
        self.api = self.factory.api
        self._start().addErrback(self._failed)

    @defer.inlineCallbacks
    def _start(self) -> Any:
        params = dict(self.params)
        params.pop("login", None)
        params.pop("password", None)  # a socket opens a session, it does not log in
        try:
            admin, _ = yield self.api.authenticate(params, self.peer_address, self.cookie_sid)
            self.call = yield self.api.prepare(params, admin, self.peer_address)
        except APIError as e:
            self._send(e.body())
            self.sendClose()
            return
        for channel in self.call.action.channels:
            yield self.api.listener.listen(channel, self._notified)
        yield self._run()

    @defer.inlineCallbacks
    def _run(self) -> Any:
        self.pending = None
        if self.call is None:
            return
        try:
            body = yield self.api.run(self.call)
        except APIError as e:
            body = e.body()
        self._send(body)

    def _send(self, body: dict[str, Any]) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(body, ensure_ascii=False).encode("utf-8"), False)

    def _notified(self, channel: str, payload: str) -> None:
        call = self.call
        if call is None or self.pending is not None:
            return
        tenant = tenant_of(payload or "")
        if call.admin.superadmin or tenant is None or tenant == call.admin.tenant_id:
            delay = self.api.config.get_float(DELAY_KEY, default=0.25)
            self.pending = self.api.clock.callLater(delay, self._rerun)

    def _rerun(self) -> None:
        self._run().addErrback(self._failed)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.keepalive is not None and self.keepalive.active():
            self.keepalive.cancel()
        self.keepalive = self.api.clock.callLater(KEEPALIVE, self._acknowledge)

    def _acknowledge(self) -> None:
        self.keepalive = None
        if self.state == self.STATE_OPEN:
            self.sendMessage(b"AKN", False)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        for timer in (self.pending, self.keepalive):
            if timer is not None and timer.active():
                timer.cancel()
        if self.call is not None:
            for channel in self.call.action.channels:
                self.api.listener.unlisten(channel, self._notified)
        self.call = None

    def _failed(self, failure: Any) -> None:
        log.failure("live list failed", failure)
        if self.state == self.STATE_OPEN:
            self._send(APIError(1100).body())
            self.sendClose()


def resource(api: API) -> WebSocketResource:
    factory = WebSocketServerFactory()
    factory.protocol = LiveList
    factory.api = api
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=10, closeHandshakeTimeout=5)
    return WebSocketResource(factory)
