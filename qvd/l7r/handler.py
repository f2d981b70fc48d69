"""The L7R's endpoints (reference §2.3), on the QVD HTTP dialect.

Each endpoint runs its checks in the original's order, so a client sees the
same status for the same fault; the improvements of DESIGN.md (Bearer
``multi_use``/``vm_id``, access checked before anything is written, clean
404/403) are in the auth chain and in ``connect``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Union

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from qvd.config import Config
from qvd.db import DatabaseError, vms
from qvd.db.pool import Database
from qvd.http.server import IRequestHandler, Request, Response, SwitchProtocols
from qvd.l7r.auth import (
    AuthError, Authenticator, Unauthorized, create_token, store_auth_params, token_header_value,
)
from qvd.l7r.checks import Checks
from qvd.l7r.connect import ConnectToVM
from qvd.l7r.errors import HTTPError, Unavailable, unauthorized
from qvd.l7r.sessions import SessionRegistry
from qvd.l7r.trail import Trail
from qvd.metrics.l7r import L7RMetrics
from qvd.polling import poll_until

log = Logger()

ALIVE = b"I am alive!\r\n"
DATABASE_DOWN = b"The database is not available, retry later"
HKD_SILENT = "The HKD of this node is not running: no heartbeat"


@dataclass
class L7RContext:
    """What every endpoint needs: this node, its database and its sessions."""

    config: Config
    database: Database
    authenticator: Authenticator
    sessions: SessionRegistry
    nodename: str
    reactor: Any  # IReactorTCP + IReactorTime
    trail: Optional[Trail] = None  # what connects leave behind (none: metrics only)

    def __post_init__(self) -> None:
        if self.trail is None:
            self.trail = Trail(L7RMetrics(), None, self.reactor)
        self.checks = Checks(self.config, self.database, self.authenticator, self.nodename)


def json_response(value: Any) -> Response:
    return Response(200, json.dumps(value).encode("ascii") + b"\n", "application/json")


def truthy(value: Optional[str]) -> bool:
    """Perl truth, as QVD 4 reads flags such as ``store_auth``."""
    return value not in (None, "", "0")


@implementer(IRequestHandler)
class L7RHandler:
    def __init__(self, context: L7RContext):
        self.ctx = context
        self.routes: dict[str, Callable[[Request], Any]] = {
            "/qvd/ping": self.ping,
            "/qvd/list_of_vm": lambda r: self.list_of(r, False),
            "/qvd/list_of_applications": lambda r: self.list_of(r, True),
            "/qvd/authenticate_user": self.authenticate_user,
            "/qvd/create_auth_token": self.create_auth_token,
            "/qvd/stop_vm": self.stop_vm,
            "/qvd/connect_to_vm": self.connect_to_vm,
        }

    def handle(self, request: Request) -> defer.Deferred:
        route = self.routes.get(request.path) if request.method == "GET" else None
        if route is None:
            return defer.succeed(Response.canned(404))
        d = defer.maybeDeferred(route, request)
        d.addErrback(self._failed, request)
        return d

    def _failed(self, failure, request: Request) -> Union[Response, SwitchProtocols]:
        error = failure.value
        if isinstance(error, (HTTPError, Unavailable)):
            return error.response()
        if isinstance(error, Unauthorized):
            return unauthorized().response()
        if isinstance(error, DatabaseError):  # down or restarting: the node cannot serve now
            log.warn("{path}: {error}", path=request.path, error=error)
            return Response(503, DATABASE_DOWN)
        if isinstance(error, AuthError):
            log.error("authentication failed internally for {path}: {error}",
                      path=request.path, error=error)
        else:
            log.failure("{path} failed", failure, path=request.path)
        return Response(500, b"Internal error")

    # -- endpoints ------------------------------------------------------------
    @defer.inlineCallbacks
    def ping(self, request: Request) -> Generator[defer.Deferred[Any], Any, Response]:
        """Alive only if this node's HKD is too: a balancer must not send users to a
        node whose VMs nobody can start (its heartbeat older than the time after
        which an HKD gives up itself, ``internal.hkd.agent.ticker.timeout``)."""
        checks = self.ctx.checks
        node = yield checks.node()
        checks.usable(node, check_state=True)
        silence = node.heartbeat_age
        if silence is None or silence > self.ctx.config.get_float(
                "internal.hkd.agent.ticker.timeout"):
            raise HTTPError(503, HKD_SILENT if silence is None else
                            f"{HKD_SILENT} for {silence:.0f} s")
        return Response(200, ALIVE)

    @defer.inlineCallbacks
    def list_of(self, request: Request, applications: bool) -> Generator[Any, Any, Response]:
        checks = self.ctx.checks
        node = yield checks.node(counted=True)
        auth = yield checks.authenticate(request)
        checks.usable(node, check_state=True)
        authenticator = self.ctx.authenticator
        yield authenticator.before_list_of_vms(auth)
        listing = yield authenticator.list_of_vm(auth, applications)
        if listing is None:
            listing = yield vms.vms_of_user(self.ctx.database, auth.user_id, applications)
        return json_response([
            {"id": vm.id, "name": vm.name, "state": vm.state, "blocked": int(bool(vm.blocked)),
             "is_application": int(bool(vm.is_application))}
            for vm in listing
        ])

    @defer.inlineCallbacks
    def authenticate_user(self, request: Request) -> Generator[Any, Any, Response]:
        yield self.ctx.checks.node()
        auth = yield self.ctx.checks.authenticate(request)
        yield self.ctx.authenticator.before_list_of_vms(auth)
        if not truthy(dict(request.query).get("store_auth")):
            return json_response({})
        params_id = yield store_auth_params(self.ctx.database, auth)
        return json_response({"auth_params_id": params_id})

    @defer.inlineCallbacks
    def create_auth_token(self, request: Request) -> Generator[Any, Any, Response]:
        yield self.ctx.checks.node()
        auth = yield self.ctx.checks.authenticate(request)
        yield self.ctx.authenticator.before_list_of_vms(auth)
        params_id, token = yield create_token(self.ctx.database, auth)
        return json_response({"auth_params_id": params_id,
                              "auth_token": token_header_value(token)})

    @defer.inlineCallbacks
    def stop_vm(self, request: Request) -> Generator[Any, Any, Response]:
        checks, config = self.ctx.checks, self.ctx.config
        node = yield checks.node(counted=True)
        auth = yield checks.authenticate(request)
        checks.usable(node, check_state=False)
        vm = yield checks.vm(checks.vm_id(request), auth)
        stopped = Response(200, b"Machine stopped\r\n")
        if vm.vm_state == "stopped":
            return stopped
        request.channel.processing([("X-QVD-VM-Info", "Stopping virtual machine")])
        state = yield vms.request_vm_stop(self.ctx.database, vm.id)
        if state not in ("starting", "running", "debugging", "stopping", "stopped"):
            raise HTTPError(
                503, f"The requested virtual machine is in an unstoppable state ({state})")

        @defer.inlineCallbacks
        def is_stopped() -> Generator[Any, Any, Optional[bool]]:
            row = yield vms.vm_row(self.ctx.database, vm.id)
            if row is None or row.vm_state == "stopped":
                return True
            request.channel.processing(
                [("X-QVD-VM-Info", "Waiting for VM to reach state 'stopped'")])
            return None

        if state != "stopped":
            yield poll_until(self.ctx.reactor, config.get_float("internal.l7r.timeout.vm_stop"),
                             config.get_float("internal.l7r.poll_time.vm"), is_stopped,
                             lambda: HTTPError(408, "VM didn't reach state 'stopped'. Timeout"))
        return stopped

    def connect_to_vm(self, request: Request) -> defer.Deferred:
        connect = ConnectToVM(self.ctx, request)
        return connect.run().addBoth(connect.record.recorded)
