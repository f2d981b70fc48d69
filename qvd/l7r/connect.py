"""``GET /qvd/connect_to_vm``: from an authenticated request to a spliced NX stream.

The steps and messages are QVD 4's (reference §2.4), with its fixes: access
is checked before anything is written for the VM, a failed attempt resets
the session row at once, and an abort from a contending client is served
by this process (see ``sessions``).  Errors from the access check on are
``Unavailable`` (503), as QVD clients expect.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

import psutil
from twisted.internet import defer, interfaces, task
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.logger import Logger

from qvd.db import DatabaseError, hosts, sessions as session_rows, vms
from qvd.db.vms import VMRow
from qvd.http.server import Channel, Request, SwitchProtocols
from qvd.http.simplerpc import SimpleRPCClient
from qvd.l7r.auth import create_token
from qvd.l7r.auth.tokens import random_text
from qvd.l7r.errors import HTTPError, Unavailable
from qvd.l7r.sessions import Session
from qvd.loadbalancer import NoHostAvailable, VMInfo, choose_host
from qvd.polling import poll_until
from qvd.reactor import epoch
from qvd.stream import transport
from qvd.stream.splice import SpliceEnd

log = Logger()

CLIENT_PREFIXES = ("qvd.client.", "custom.")


def slave_key() -> str:
    """64 letters and digits, as QVD 4's."""
    return random_text(64)


class Progress:
    """The ``102`` ``X-QVD-VM-Info`` lines of one connect: each step's text when it
    starts, and the last one again whenever ``interval`` seconds pass without a line.

    QVD's C client (libqvdclient) waits for the answer with a ``select`` whose
    descriptor set it never re-arms: after one second without data it stops
    reading the socket for good, so a later answer (a 503 after a slow VM start)
    would never reach it.  QVD 4 repeated its waiting line every 2 s.
    """

    def __init__(self, channel: Channel, clock: interfaces.IReactorTime, interval: float):
        self.channel = channel
        self.clock = clock
        self.interval = interval
        self.text: Optional[str] = None
        self._timer: Optional[interfaces.IDelayedCall] = None

    def say(self, text: str) -> None:
        self.text = text
        self.channel.processing([("X-QVD-VM-Info", text)])
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.interval)
        else:
            self._timer = self.clock.callLater(self.interval, self._again)

    def _again(self) -> None:
        self._timer = None
        if self.text is not None and self.channel.connected:
            self.say(self.text)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class ConnectToVM:
    """One connect_to_vm request; ``run`` fires with the 101 or an error response.

    ``ctx`` is the endpoints' ``L7RContext`` (its checks, database, sessions, reactor).
    """

    def __init__(self, ctx: Any, request: Request):
        self.ctx = ctx
        self.config = ctx.config
        self.db = ctx.database
        self.request = request
        self.session: Optional[Session] = None
        self.vm_end: Optional[SpliceEnd] = None
        self.progress = Progress(request.channel, ctx.reactor,
                                 self.config.get_float("l7r.progress.interval"))
        self.record = ctx.trail.connect(request.channel.peer)  # log, audit, metrics

    def info(self, text: str) -> None:
        self.progress.say(text)

    def seconds(self, key: str) -> float:
        return self.config.get_float(key)

    def pause(self, key: str) -> defer.Deferred:
        return task.deferLater(self.ctx.reactor, self.seconds(key), lambda: None)

    def poll(self, timeout_key: str, interval_key: str, step: Any, expired: Any) -> defer.Deferred:
        return poll_until(self.ctx.reactor, self.seconds(timeout_key), self.seconds(interval_key),
                          step, expired)

    @defer.inlineCallbacks
    def run(self) -> Generator[Any, Any, SwitchProtocols]:
        checks = self.ctx.checks
        node = yield checks.node(counted=True)
        self.host_id, self.host_address = node.id, node.address
        self.record.enter("auth")
        auth = self.record.auth = yield checks.authenticate(self.request)
        self.record.enter(None)
        checks.usable(node, check_state=False)
        headers = self.request.headers
        if headers.get("Connection") != "Upgrade" or headers.get("Upgrade") != "QVD/1.0":
            raise HTTPError(426)
        vm_id = checks.vm_id(self.request)
        client_params = self.client_params()
        vm = self.record.vm = yield checks.vm(vm_id, auth)
        if vm.blocked:
            raise HTTPError(403, "The requested virtual machine is offline for maintenance")
        key = slave_key()
        try:
            result = yield self.connect(vm, auth, client_params, key)
        except Unavailable as e:
            log.info("connect_to_vm {vm_id} for {login} failed: {reason}", vm_id=vm_id,
                     login=auth.login, reason=e)
            yield self.give_up()
            raise
        except DatabaseError:  # the handler answers 503 and logs a warning
            yield self.give_up()
            raise
        except Exception as e:
            yield self.give_up()
            log.failure("connect_to_vm {vm_id} failed", vm_id=vm_id)
            raise Unavailable(str(e) or type(e).__name__) from e
        finally:
            self.progress.stop()
        return result

    def client_params(self) -> dict[str, str]:
        params = {k: v or "" for k, v in self.request.query if k != "id"}
        invalid = [k for k in params if not k.startswith(CLIENT_PREFIXES)]
        if invalid:
            raise HTTPError(403, "Invalid parameters " + " ".join(invalid))
        return params

    @defer.inlineCallbacks
    def give_up(self) -> Generator[Any, Any, None]:
        if self.vm_end is not None and self.vm_end.transport is not None:
            self.vm_end.transport.loseConnection()
        if self.session is not None:
            yield self.ctx.sessions.release(self.session)

    def check_abort(self) -> None:
        if self.session is not None and (self.session.aborted or not self.request.channel.connected):
            raise Unavailable(f"Aborted by contending session VM VM_ID: {self.session.vm_id}")

    @defer.inlineCallbacks
    def connect(self, vm: VMRow, auth: Any, client_params: dict[str, str],
                key: str) -> Generator[Any, Any, SwitchProtocols]:
        vm = yield self.take_over(vm.id, auth.user_id)
        # the VMA's token: this VM only, gone with the session (``SessionRegistry.release``)
        _, token = yield create_token(self.db, auth, vm_id=vm.id)
        self.session.token = token
        host_id = vm.host_id
        if host_id is None:
            self.record.enter("host_assignment")
            host_id = yield self.assign_host(vm)
            self.record.enter(None)
        self.check_abort()
        yield self.ctx.authenticator.before_connect_to_vm(auth)
        self.record.enter("vm_start")
        vm = yield self.start_vm(vm, host_id)
        self.record.enter("x_start")
        params = yield self.x_params(vm, auth, client_params, token, key)
        yield self.x_start(vm, params)
        yield self.wait_for_x(vm)
        self.record.enter("nx_connect")
        yield self.connect_x(vm)
        return self.switch(key)

    @defer.inlineCallbacks
    def reread(self, vm_id: int) -> Generator[Any, Any, VMRow]:
        vm = yield vms.vm_row(self.db, vm_id)
        if vm is None:
            raise Unavailable(f"VM {vm_id} was deleted")
        return vm

    # step 9
    def take_over(self, vm_id: int, user_id: int) -> defer.Deferred[VMRow]:
        """The VM's session for ``user_id`` (its real user from now on), once every other
        holder is aborted; fires with the VM as the claim left it."""
        sessions = self.ctx.sessions

        @defer.inlineCallbacks
        def acquire() -> Generator[Any, Any, Optional[VMRow]]:
            while True:
                claim = yield session_rows.acquire_session(
                    self.db, vm_id, user_id, self.host_id, sessions.pid, epoch())
                if claim is None:
                    raise Unavailable(f"VM {vm_id} was deleted")
                holder = claim.holder
                if holder is None:
                    self.session = Session(vm_id, self.request.channel)
                    sessions.add(self.session)
                    self.info(f"Session acquired for VM_ID: {vm_id}")
                    return claim.vm
                if holder.host_id == self.host_id and (holder.pid is None or (
                        holder.pid != sessions.pid and not psutil.pid_exists(holder.pid))):
                    yield sessions.forget(vm_id, holder.pid)
                    continue
                break
            self.info(f"Aborting contending session for VM_ID: {vm_id}")
            if holder == session_rows.Holder(self.host_id, sessions.pid):
                # Ours: end it now.  If it is not registered any more, it already
                # ended (our own NOTIFY may have beaten this reply): its row is
                # being reset, by its release or by ``check_aborts``.
                contender = sessions.get(vm_id)
                if contender is not None:
                    contender.abort()
            if not self.request.channel.connected:
                raise Unavailable("client went away")
            return None

        return self.poll("internal.l7r.timeout.takeover", "internal.l7r.poll_time.vm", acquire,
                         lambda: Unavailable("Unable to acquire VM, close other clients"))

    # step 10
    @defer.inlineCallbacks
    def assign_host(self, vm: VMRow) -> Generator[Any, Any, int]:
        self.info(f"Assigning VM {vm.id} to host")
        candidates = yield hosts.lb_candidates(self.db)
        try:
            host_id = choose_host(
                self.config, VMInfo(vm.id, vm.name, vm.user_id, vm.osf_id, vm.di_tag), candidates)
        except NoHostAvailable as e:
            raise Unavailable(str(e)) from None
        if not (yield vms.assign_host(self.db, vm.id, host_id)):
            raise Unavailable(f"Unable to start VM {vm.id}, state changed unexpectedly")
        return host_id

    # step 12
    @defer.inlineCallbacks
    def start_vm(self, vm: VMRow, host_id: int) -> Generator[Any, Any, VMRow]:
        """``vm`` as the take-over left it (a host assignment needs it stopped)."""
        vm_id = vm.id
        if vm.vm_state == "running":
            return vm
        if vm.vm_state == "stopped":
            self.info("Starting virtual machine")
            yield vms.request_vm_start(self.db, vm_id, host_id)

        @defer.inlineCallbacks
        def running() -> Generator[Any, Any, Optional[VMRow]]:
            vm = yield self.reread(vm_id)
            if vm.vm_state == "running":
                return vm
            if vm.vm_state == "stopped" and vm.vm_cmd is None:
                raise Unavailable(f"Failed to start virtual machine {vm_id}")
            self.check_abort()
            self.info("Waiting for VM to reach state 'running'")
            return None

        return (yield self.poll("internal.l7r.timeout.vm_start", "internal.l7r.poll_time.vm",
                                running,
                                lambda: Unavailable("VM didn't reach state 'running'. Timeout")))

    # step 13
    @defer.inlineCallbacks
    def x_params(self, vm: VMRow, auth: Any, client_params: dict[str, str], token: str,
                 key: str) -> Generator[Any, Any, dict[str, str]]:
        params = dict(client_params)
        params["auth_token"] = token
        params["host_address"] = self.host_address
        for prop in (yield vms.vm_properties(self.db, vm.id)):
            params[prop.key] = prop.value
        params.update(auth.params)
        params["qvd.slave.key"] = key
        return params

    def rpc(self, vm: VMRow) -> SimpleRPCClient:
        return SimpleRPCClient(self.ctx.reactor, vm.vm_address, vm.vma_port,
                               self.seconds("internal.l7r.timeout.vma"))

    # step 14
    @defer.inlineCallbacks
    def x_start(self, vm: VMRow, params: dict[str, str]) -> Generator[Any, Any, None]:
        self.info(f"Starting X session at VM {vm.id}")
        attempts = self.config.get_int("internal.l7r.retry.x_start") + 1
        last = "no attempt"
        for attempt in range(attempts):
            try:
                yield self.rpc(vm).call("x_start", params)
                return
            except Exception as e:  # network or RPC error: QVD retries both
                last = str(e) or type(e).__name__
            if attempt + 1 < attempts:
                yield self.pause("internal.l7r.poll_time.x")
                self.check_abort()
        raise Unavailable(f"Unable to start X session on VM {vm.id}: {last}")

    # step 15
    def wait_for_x(self, vm: VMRow) -> defer.Deferred[bool]:
        self.info(f"Waiting for X session to come up on VM {vm.id}")
        seen: list[Optional[str]] = [None]

        @defer.inlineCallbacks
        def listening() -> Generator[Any, Any, Optional[bool]]:
            try:
                state = yield self.rpc(vm).call("x_state")
            except Exception:
                state = None
            seen[0] = state
            if state == "listening":
                return True
            if state not in (None, "starting", "provisioning"):
                raise Unavailable(f"Unable to start X session on VM {vm.id}, state went to {state}")
            self.check_abort()
            return None

        def expired() -> Optional[Exception]:
            if seen[0] == "provisioning":  # provisioning takes as long as it takes
                return None
            return Unavailable(f"Unable to start X session on VM {vm.id}, operation timed out!")

        return self.poll("internal.l7r.timeout.x_start", "internal.l7r.poll_time.x", listening,
                         expired)

    # step 16
    @defer.inlineCallbacks
    def connect_x(self, vm: VMRow) -> Generator[Any, Any, None]:
        """Connect to nxagent's NX port.  nxagent reports its session before it opens
        the port, so a refused connect is retried every ``poll_time.x`` for up to
        ``timeout.x_start`` seconds (QVD 4 VMAs report ``listening`` just as early)."""
        self.info(f"Connecting X session for VM_ID: {vm.id}")
        refused: list[Exception] = []

        def unable(e: Exception) -> Unavailable:
            # the attempt counts, though no session came of it (``mark_connected`` counts
            # the attempts that reached the port)
            hosts.count(self.db, self.host_id, "nx_attempts").addErrback(
                lambda f: log.warn("cannot count an NX attempt: {error}",
                                   error=f.getErrorMessage()))
            return Unavailable(f"Unable to connect to X server  on VM VM_ID: {vm.id}: {e}")

        @defer.inlineCallbacks
        def connected() -> Generator[Any, Any, Optional[SpliceEnd]]:
            try:  # a transport of ours: it sends at once, like the client's side
                return (yield transport.connect(self.ctx.reactor, vm.vm_address, vm.x_port,
                                                SpliceEnd(),
                                                self.seconds("internal.l7r.timeout.vma")))
            except ConnectionRefusedError as e:
                refused[:] = [e]
            except (ConnectError, OSError) as e:
                raise unable(e) from None
            self.check_abort()
            return None

        self.vm_end = yield self.poll("internal.l7r.timeout.x_start", "internal.l7r.poll_time.x",
                                      connected, lambda: unable(refused[0]))
        outcome = yield session_rows.mark_connected(
            self.db, vm.id, self.host_id, self.ctx.sessions.pid, epoch())
        if outcome == "aborted":
            raise Unavailable(f"Aborted by contending session VM VM_ID: {vm.id}")
        if outcome != "connected":
            raise Unavailable(f"User state unexpectedly went to {outcome}")
        self.check_abort()

    # steps 17-19
    def switch(self, key: str) -> SwitchProtocols:
        self.info("Connection established")
        session, vm_end = self.session, self.vm_end
        sessions, clock = self.ctx.sessions, self.ctx.reactor
        spliced = self.record.spliced(vm_end.transport)  # logs the start; the end below

        def ended(_: SpliceEnd) -> None:
            spliced.ended("VM" if vm_end.stopped_first else "client", vm_end.gone.wait())
            sessions.release(session).addErrback(
                lambda f: log.warn("cannot release VM {vm_id}: {error}",
                                   vm_id=session.vm_id, error=f.getErrorMessage()))

        session.spliced(clock.seconds(), vm_end.close)
        return SwitchProtocols([("X-QVD-Slave-Key", key)],
                               SpliceEnd(vm_end, ended, close=self.request.channel.close))
