"""What the L7R's logins, connects and sessions leave behind: a log line, an audit row
in the ``log`` table and metrics, each written once, where the event ends.

Logins are authentications that ran the plugin chain (the same credentials again
on one connection are QVD's per-connection cache, not a new login).  A connect
is timed phase by phase (``ConnectRecord.enter``); a phase that fails is not
timed, its name becomes the failure's reason.  A session's bytes each way are
read from the kernel's counts of the VM-side socket when it ends
(``qvd.stream.tcpinfo``), so the splice itself counts nothing.  Audit rows
(``qvd.audit``) name the user as the object (``user_login``) or the VM
(``vm_connect``, ``vm_disconnect``) with the user in ``arguments``; source
``L7R`` and the client's address; never the password or a token.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.audit import AuditEntry, AuditQueue
from qvd.db import DatabaseError
from qvd.db.vms import VMRow
from qvd.l7r.auth.credentials import Basic, parse_authorization
from qvd.l7r.auth.interface import Auth, Throttled, Unauthorized
from qvd.l7r.errors import HTTPError, Unavailable
from qvd.metrics.l7r import L7RMetrics
from qvd.stream.tcpinfo import Tally

log = Logger()

SOURCE = "L7R"
VM_SIDE_WAIT = 10.0  # seconds an ended session's VM side may take to flush and close
# the administration API's status codes closest to each outcome (reference: API §1.5)
WRONG_CREDENTIALS, INTERNAL, NO_DATABASE, FORBIDDEN = 3200, 1100, 2100, 4210
NOT_FOUND, NO_HOST, CANNOT_START, INVALID = 1300, 5140, 5130, 6100
_CODES = {"unauthorized": WRONG_CREDENTIALS, "throttled": WRONG_CREDENTIALS,
          "forbidden": FORBIDDEN, "not_found": NOT_FOUND, "bad_request": INVALID,
          "node_unavailable": NO_DATABASE, "database": NO_DATABASE, "internal": INTERNAL,
          "host_assignment": NO_HOST}


def reason_of(error: BaseException, phase: Optional[str]) -> str:
    """The ``reason`` label of a failed connect: what went wrong, or in which phase."""
    if isinstance(error, Throttled):
        return "throttled"
    if isinstance(error, Unauthorized):
        return "unauthorized"
    if isinstance(error, HTTPError):
        return {401: "unauthorized", 403: "forbidden", 404: "not_found",
                503: "node_unavailable"}.get(error.status, "bad_request")
    if isinstance(error, DatabaseError):
        return "database"
    if isinstance(error, Unavailable):
        return phase or "session"  # no phase: the take-over of the VM's session
    return "internal"


def attempted_login(authorization: str) -> Optional[str]:
    """The login part of Basic credentials, for the trail of a login that failed early."""
    try:
        credentials = parse_authorization(authorization)
    except Unauthorized:
        return None
    return credentials.login[:80] if isinstance(credentials, Basic) else None


class Trail:
    """One L7R process's record keeper (``audit`` None: metrics and log lines only)."""

    def __init__(self, metrics: L7RMetrics, audit: Optional[AuditQueue], clock: IReactorTime):
        self.metrics = metrics
        self.audit = audit
        self.clock = clock

    def _audit(self, entry: AuditEntry) -> None:
        if self.audit is not None:
            self.audit.add(entry)

    # -- logins -------------------------------------------------------------------------
    def checked(self, plugin: str, accepted: bool) -> None:
        """One plugin looked at one set of credentials."""
        self.metrics.auth_attempts.labels(plugin).inc()
        if accepted:
            self.metrics.auth_successes.labels(plugin).inc()

    def address_throttled(self, peer: str) -> None:
        self.metrics.auth_throttled.labels("address").inc()
        self.metrics.logins.labels("throttled").inc()
        self._audit(AuditEntry("user_login", "login", "user", WRONG_CREDENTIALS, source=SOURCE,
                               ip=peer, arguments={"reason": "throttled: too many recent"
                                                             " failures from this address"}))

    def login(self, auth: Auth, authorization: str, error: Optional[Exception] = None) -> None:
        """The end of one authentication: ``error`` None for a success."""
        if error is None:
            result, status, arguments = "ok", 0, None
        elif isinstance(error, Throttled):
            self.metrics.auth_throttled.labels("login").inc()
            result, status, arguments = "throttled", WRONG_CREDENTIALS, {
                "reason": f"throttled: {error}"}
        else:
            result = "failed"
            status = WRONG_CREDENTIALS if isinstance(error, Unauthorized) else INTERNAL
            arguments = {"reason": str(error) or type(error).__name__}
        self.metrics.logins.labels(result).inc()
        self._audit(AuditEntry(
            "user_login", "login", "user", status, tenant_id=auth.tenant_id,
            tenant_name=auth.tenant, object_id=auth.user_id,
            object_name=auth.login or attempted_login(authorization), arguments=arguments,
            source=SOURCE, ip=auth.peer))

    # -- connects -----------------------------------------------------------------------
    def connect(self, peer: str) -> "ConnectRecord":
        return ConnectRecord(self, peer)


class ConnectRecord:
    """One connect_to_vm, from its request to its 101 or its error."""

    def __init__(self, trail: Trail, peer: str):
        self.trail = trail
        self.peer = peer
        self.auth: Optional[Auth] = None
        self.vm: Optional[VMRow] = None
        self.started = trail.clock.seconds()
        self.phase: Optional[str] = None
        self._phase_started = self.started

    def enter(self, phase: Optional[str]) -> None:
        """The phase before is over (and timed); ``phase`` starts (None: between phases)."""
        now = self.trail.clock.seconds()
        if self.phase is not None:
            self.trail.metrics.phase_seconds.labels(self.phase).observe(now - self._phase_started)
        self.phase, self._phase_started = phase, now

    def recorded(self, outcome: Any) -> Any:
        """Record how the connect ended (``outcome``: its Deferred's result); passes it on."""
        metrics = self.trail.metrics
        if not isinstance(outcome, Failure):
            self.enter(None)
            metrics.connects.labels("ok").inc()
            metrics.connect_seconds.observe(self.trail.clock.seconds() - self.started)
            return outcome
        reason = reason_of(outcome.value, self.phase)
        metrics.connects.labels("failed").inc()
        metrics.connect_failures.labels(reason).inc()
        self._audit("vm_connect", _CODES.get(reason, CANNOT_START),
                    reason=f"{reason}: {outcome.getErrorMessage()}")
        return outcome

    def _audit(self, action: str, status: int, **arguments: Any) -> None:
        auth, vm = self.auth, self.vm
        if auth is not None:
            arguments.update(user=auth.login, user_id=auth.user_id)
        self.trail._audit(AuditEntry(
            action, "exec", "vm", status, tenant_id=auth.tenant_id if auth else None,
            tenant_name=auth.tenant if auth else None, object_id=vm.id if vm else None,
            object_name=vm.name if vm else None, arguments=arguments, source=SOURCE,
            ip=self.peer))

    def spliced(self, vm_transport: Any) -> "SessionRecord":
        """The 101 went out: the session starts (its VM side on ``vm_transport``)."""
        return SessionRecord(self, Tally.of(vm_transport))


class SessionRecord:
    """One spliced session; ``ended`` once, when its first side closes."""

    def __init__(self, connect: ConnectRecord, tally: Optional[Tally]):
        self.connect = connect
        self.tally = tally
        trail = connect.trail
        self.started = trail.clock.seconds()
        trail.metrics.sessions.inc()
        auth, vm = connect.auth, connect.vm
        self.login = auth.login if auth else None
        self.vm_id, self.vm_name = (vm.id, vm.name) if vm else (None, None)
        log.info("session start: {login} on VM {vm_id} ({vm_name}) from {client}",
                 login=self.login, vm_id=self.vm_id, vm_name=self.vm_name, client=connect.peer)
        connect._audit("vm_connect", 0)

    def ended(self, closed_by: str, vm_side_gone: defer.Deferred[None]) -> None:
        """The session ended (``closed_by``: ``client`` or ``VM``, the side that closed
        first); it is recorded once its VM side is closed too, every byte passed on
        (or after ``VM_SIDE_WAIT`` seconds, if the VM does not take the last ones)."""
        seconds = self.connect.trail.clock.seconds() - self.started
        vm_side_gone.addTimeout(VM_SIDE_WAIT, self.connect.trail.clock)
        vm_side_gone.addBoth(lambda _: self._record(closed_by, seconds))

    def _record(self, closed_by: str, seconds: float) -> None:
        trail = self.connect.trail
        counts = self.tally.read() if self.tally is not None else None
        from_client = counts.sent if counts else None
        to_client = counts.received if counts else None
        metrics = trail.metrics
        metrics.sessions.dec()
        metrics.sessions_ended.inc()
        if counts is not None:
            metrics.spliced_bytes.labels("client_to_vm").inc(counts.sent)
            metrics.spliced_bytes.labels("vm_to_client").inc(counts.received)
        log.info("session end: {login} on VM {vm_id} ({vm_name}) from {client} after"
                 " {seconds:.1f} s, {bytes_from_client} bytes from the client,"
                 " {bytes_to_client} bytes to it; the {closed_by} closed first",
                 login=self.login, vm_id=self.vm_id, vm_name=self.vm_name,
                 client=self.connect.peer, seconds=seconds, bytes_from_client=from_client,
                 bytes_to_client=to_client, closed_by=closed_by)
        self.connect._audit("vm_disconnect", 0, seconds=round(seconds, 3),
                            bytes_from_client=from_client, bytes_to_client=to_client,
                            closed_by=closed_by)
