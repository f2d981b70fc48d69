"""The checks the L7R's endpoints share, each with QVD 4's status and message: this node
registered and usable, the request authenticated, its VM id, the VM there and allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator

from twisted.internet import defer

from qvd.config import Config
from qvd.db import hosts, vms
from qvd.db.hosts import HostStatus
from qvd.db.pool import Database
from qvd.db.vms import VMRow
from qvd.http.server import Request
from qvd.l7r.auth import Auth, Authenticator
from qvd.l7r.errors import HTTPError

UNREGISTERED = "Host is not registered in the database"
NO_SUCH_VM = "The requested virtual machine does not exist"
NOT_ALLOWED = "You are not allowed to access requested virtual machine"


@dataclass
class Checks:
    config: Config
    database: Database
    authenticator: Authenticator
    nodename: str

    @defer.inlineCallbacks
    def node(self, counted: bool = False) -> Generator[defer.Deferred[Any], Any, HostStatus]:
        """This node; 503 if not registered.  ``counted``: one more ``http_requests``."""
        node = yield hosts.node_status(self.database, self.nodename, counted)
        if node is None:
            raise HTTPError(503, UNREGISTERED)
        return node

    def authenticate(self, request: Request) -> defer.Deferred[Auth]:
        """The request's user, with this connection's authentication cache."""
        state = request.channel.state
        if "auth" not in state:
            state["auth"] = self.authenticator.for_connection(request.channel.peer)
        return state["auth"].authenticate(request.headers)

    @staticmethod
    def usable(node: HostStatus, check_state: bool) -> None:
        if node.blocked:
            raise HTTPError(503, "Server is blocked")
        if check_state and node.state != "running":
            raise HTTPError(503, f"Server is {node.state}")

    @staticmethod
    def vm_id(request: Request) -> int:
        value = dict(request.query).get("id")
        if value is None or value == "":
            raise HTTPError(422, "parameter id is missing")
        try:
            return int(value)
        except ValueError:
            raise HTTPError(404, NO_SUCH_VM) from None

    @defer.inlineCallbacks
    def vm(self, vm_id: int, auth: Auth) -> Generator[defer.Deferred[Any], Any, VMRow]:
        """The VM, if it exists (404) and ``auth`` may use it (403)."""
        vm = yield vms.vm_row(self.database, vm_id)
        if vm is None:
            raise HTTPError(404, NO_SUCH_VM)
        if not (yield self.authenticator.allow_access_to_vm(auth, vm)):
            raise HTTPError(403, NOT_ALLOWED)
        return vm
