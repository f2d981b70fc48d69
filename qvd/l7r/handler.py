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

from twisted.internet import defer, interfaces, task
from twisted.logger import Logger
from zope.interface import implementer

from qvd.config import Config
from qvd.db import DatabaseError, queries
from qvd.db.pool import Database
from qvd.http.server import IRequestHandler, Request, Response, SwitchProtocols
from qvd.l7r.auth import (
    AuthError, Authenticator, Unauthorized, create_token, store_auth_params, token_header_value,
)
from qvd.l7r.connect import ConnectToVM
from qvd.l7r.errors import HTTPError, Unavailable, unauthorized
from qvd.l7r.sessions import SessionRegistry
from qvd.l7r.vms import VMRow

log = Logger()

ALIVE = b"I am alive!\r\n"
UNREGISTERED = "Host is not registered in the database"
NO_SUCH_VM = "The requested virtual machine does not exist"
NOT_ALLOWED = "You are not allowed to access requested virtual machine"
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
    clock: interfaces.IReactorTime


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

    # -- shared checks -------------------------------------------------------
    @defer.inlineCallbacks
    def node(self, counted: bool = False) -> Generator[defer.Deferred[Any], Any, tuple]:
        """(host id, address, state, blocked) of this node; 503 if not registered."""
        rows = yield queries.node_status(self.ctx.database, self.ctx.nodename)
        if not rows:
            raise HTTPError(503, UNREGISTERED)
        if counted:
            yield queries.count(self.ctx.database, rows[0][0], "http_requests")
        return rows[0]

    def authenticate(self, request: Request) -> defer.Deferred:
        """The request's user, with this connection's authentication cache."""
        state = request.channel.state
        if "auth" not in state:
            state["auth"] = self.ctx.authenticator.for_connection(request.channel.peer)
        return state["auth"].authenticate(request.headers)

    @staticmethod
    def usable(node: tuple, check_state: bool) -> None:
        _, _, state, blocked, _ = node
        if blocked:
            raise HTTPError(503, "Server is blocked")
        if check_state and state != "running":
            raise HTTPError(503, f"Server is {state}")

    @staticmethod
    def vm_id(request: Request) -> int:
        value = dict(request.query).get("id")
        if value is None or value == "":
            raise HTTPError(422, "parameter id is missing")
        try:
            return int(value)
        except ValueError:
            raise HTTPError(404, NO_SUCH_VM) from None

    # -- endpoints ------------------------------------------------------------
    @defer.inlineCallbacks
    def ping(self, request: Request) -> Generator[defer.Deferred[Any], Any, Response]:
        """Alive only if this node's HKD is too: a balancer must not send users to a
        node whose VMs nobody can start (its heartbeat older than the time after
        which an HKD gives up itself, ``internal.hkd.agent.ticker.timeout``)."""
        node = yield self.node()
        self.usable(node, check_state=True)
        silence = node[4]
        if silence is None or silence > self.ctx.config.get_float(
                "internal.hkd.agent.ticker.timeout"):
            raise HTTPError(503, HKD_SILENT if silence is None else
                            f"{HKD_SILENT} for {float(silence):.0f} s")
        return Response(200, ALIVE)

    @defer.inlineCallbacks
    def list_of(self, request: Request, applications: bool) -> Generator[Any, Any, Response]:
        node = yield self.node(counted=True)
        auth = yield self.authenticate(request)
        self.usable(node, check_state=True)
        authenticator = self.ctx.authenticator
        yield authenticator.before_list_of_vms(auth)
        rows = yield authenticator.list_of_vm(auth, applications)
        if rows is None:
            rows = yield queries.vms_of_user(self.ctx.database, auth.user_id, applications)
        return json_response([
            {"id": vm_id, "name": name, "state": state, "blocked": int(bool(blocked)),
             "is_application": int(bool(is_app))}
            for vm_id, name, state, blocked, is_app in rows
        ])

    @defer.inlineCallbacks
    def authenticate_user(self, request: Request) -> Generator[Any, Any, Response]:
        yield self.node()
        auth = yield self.authenticate(request)
        yield self.ctx.authenticator.before_list_of_vms(auth)
        if not truthy(dict(request.query).get("store_auth")):
            return json_response({})
        params_id = yield store_auth_params(self.ctx.database, auth)
        return json_response({"auth_params_id": params_id})

    @defer.inlineCallbacks
    def create_auth_token(self, request: Request) -> Generator[Any, Any, Response]:
        yield self.node()
        auth = yield self.authenticate(request)
        yield self.ctx.authenticator.before_list_of_vms(auth)
        params_id, token = yield create_token(self.ctx.database, auth)
        return json_response({"auth_params_id": params_id,
                              "auth_token": token_header_value(token)})

    @defer.inlineCallbacks
    def vm_for(self, request: Request, auth: Any) -> Generator[Any, Any, VMRow]:
        vm = VMRow.of((yield queries.vm_row(self.ctx.database, self.vm_id(request))))
        if vm is None:
            raise HTTPError(404, NO_SUCH_VM)
        if not (yield self.ctx.authenticator.allow_access_to_vm(auth, vm)):
            raise HTTPError(403, NOT_ALLOWED)
        return vm

    @defer.inlineCallbacks
    def stop_vm(self, request: Request) -> Generator[Any, Any, Response]:
        node = yield self.node(counted=True)
        auth = yield self.authenticate(request)
        self.usable(node, check_state=False)
        vm = yield self.vm_for(request, auth)
        stopped = Response(200, b"Machine stopped\r\n")
        if vm.vm_state == "stopped":
            return stopped
        request.channel.processing([("X-QVD-VM-Info", "Stopping virtual machine")])
        state = yield queries.request_vm_stop(self.ctx.database, vm.id)
        if state not in ("starting", "running", "debugging", "stopping", "stopped"):
            raise HTTPError(
                503, f"The requested virtual machine is in an unstoppable state ({state})")
        config = self.ctx.config
        deadline = self.ctx.clock.seconds() + config.get_float("internal.l7r.timeout.vm_stop")
        while state != "stopped":
            if self.ctx.clock.seconds() >= deadline:
                raise HTTPError(408, "VM didn't reach state 'stopped'. Timeout")
            request.channel.processing(
                [("X-QVD-VM-Info", "Waiting for VM to reach state 'stopped'")])
            yield task.deferLater(self.ctx.clock, config.get_float("internal.l7r.poll_time.vm"),
                                  lambda: None)
            vm = VMRow.of((yield queries.vm_row(self.ctx.database, vm.id)))
            state = vm.vm_state if vm is not None else "stopped"
        return stopped

    def connect_to_vm(self, request: Request) -> defer.Deferred:
        return ConnectToVM(self, request).run()
