"""The sessions this L7R process holds, and the aborts other L7Rs ask of it.

QVD 4 needed the HKD to kill an L7R process to end a session another client
took over.  Here the L7R owns its sessions: it LISTENs on
``qvd_cmd_for_user_on_host<host id>`` (every worker of the host hears it and
looks for rows carrying its own pid), closes the aborted session itself and
resets the ``vm_runtimes`` row.  A poll every
``internal.hkd.agent.l7rkiller.delay`` seconds covers NOTIFYs lost while the
LISTEN connection was down.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Generator, Optional

import psutil
from twisted.application.service import Service
from twisted.internet import defer, interfaces, task
from twisted.logger import Logger

from qvd.config import Config
from qvd.reactor import epoch
from qvd.db import channels
from qvd.db import sessions as rows
from qvd.db.listener import Listener
from qvd.db.pool import Database
from qvd.http.server import Channel

log = Logger()


class Session:
    """One client's claim on a VM, from ``connecting`` to the end of its splice."""

    __slots__ = ("vm_id", "aborted", "released", "spliced_at", "token", "_client", "_close_vm")

    def __init__(self, vm_id: int, client: Channel):
        self.vm_id = vm_id
        self.aborted = False
        self.released = False
        self.spliced_at: Optional[float] = None
        self.token: Optional[str] = None  # the token the VMA got for this session
        self._client = client
        self._close_vm: Optional[Callable[[], None]] = None

    def spliced(self, now: float, close_vm: Callable[[], None]) -> None:
        self.spliced_at = now
        self._close_vm = close_vm

    def abort(self) -> None:
        """Another client takes the VM: hang up on ours with a clean close, which
        qvd-client tells from a lost connection (the connect handler, if still
        running, sees ``aborted`` and stops)."""
        self.aborted = True
        self._client.close()
        if self._close_vm is not None:
            self._close_vm()

    def cut(self) -> None:
        """This L7R stops: drop the client's connection (it sees the server lost,
        not a take-over) and leave the VM's session to be resumed."""
        self.aborted = True
        self._client.abort()
        if self._close_vm is not None:
            self._close_vm()


class SessionRegistry(Service):
    name = "l7r-sessions"

    def __init__(self, config: Config, database: Database, listener: Listener, host_id: int,
                 clock: interfaces.IReactorTime, pid: Optional[int] = None):
        self.config = config
        self.database = database
        self.listener = listener
        self.host_id = host_id
        self.clock = clock
        self.pid = pid if pid is not None else os.getpid()
        self._sessions: dict[int, Session] = {}
        self._releasing: set[defer.Deferred[None]] = set()
        self._poll: Optional[task.LoopingCall] = None
        self.started: defer.Deferred = defer.Deferred()
        self._channel = channels.user_commands(host_id)

    def startService(self) -> None:
        super().startService()
        self.started = self._start()

    @defer.inlineCallbacks
    def _start(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Listen for aborts before the L7R takes its first request."""
        yield self.forget_dead_holders()
        yield self.listener.listen(self._channel, self._heard)
        self.listener.on_reconnect(self._heard_again)
        self._poll = task.LoopingCall(self.check_aborts)
        self._poll.clock = self.clock
        self._poll.start(self.config.get_float("internal.hkd.agent.l7rkiller.delay"), now=False)

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Cut every session and reset its row before the database goes away."""
        super().stopService()
        yield self.started
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self.listener.remove_on_reconnect(self._heard_again)
        yield self.listener.unlisten(self._channel, self._heard)
        yield self.cut_all()

    def cut_all(self) -> defer.Deferred[Any]:
        """Cut every session (this L7R stops serving them) and fire once their rows
        are reset."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.cut()
        for session in sessions:
            self.release(session).addErrback(
                lambda f, vm_id=session.vm_id: log.warn(
                    "cannot release VM {vm_id}: {error}", vm_id=vm_id,
                    error=f.getErrorMessage()))
        return defer.DeferredList(list(self._releasing))

    def _heard(self, channel: str, payload: str) -> None:
        self.check_aborts()

    def _heard_again(self) -> None:
        self.check_aborts()

    # -- bookkeeping --------------------------------------------------------
    def add(self, session: Session) -> None:
        self._sessions[session.vm_id] = session

    def get(self, vm_id: int) -> Optional[Session]:
        return self._sessions.get(vm_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def release(self, session: Session) -> defer.Deferred[None]:
        """The session is over, however it ended: reset the row if it is still ours
        (once per session, however many paths report its end)."""
        if session.released:
            return defer.succeed(None)
        session.released = True
        if self._sessions.get(session.vm_id) is session:
            del self._sessions[session.vm_id]
        d = self._release(session)
        self._releasing.add(d)
        d.addBoth(self._released, d)
        return d

    def _released(self, result: Any, d: defer.Deferred[None]) -> Any:
        self._releasing.discard(d)
        return result

    def _release(self, session: Session) -> defer.Deferred[None]:
        short = session.spliced_at is not None and (
            self.clock.seconds() - session.spliced_at
            < self.config.get_float("internal.l7r.short_session"))
        return rows.end_session(self.database, session.vm_id, self.host_id, self.pid, epoch(),
                                session.token, short)

    def check_aborts(self) -> defer.Deferred[None]:
        d = rows.sessions_to_abort(self.database, self.host_id, self.pid)
        d.addCallback(self._abort)
        d.addErrback(lambda f: log.warn("cannot check for session aborts: {error}",
                                        error=f.getErrorMessage()))
        return d

    @defer.inlineCallbacks
    def _abort(self, vm_ids: list[int]) -> Generator[defer.Deferred[Any], Any, None]:
        for vm_id in vm_ids:
            session = self._sessions.get(vm_id)
            if session is not None:
                log.info("session on VM {vm_id} aborted for another client", vm_id=vm_id)
                session.abort()
            else:  # a row we no longer back (e.g. a handler that already failed)
                yield rows.release_session(
                    self.database, vm_id, self.host_id, self.pid, epoch())

    @defer.inlineCallbacks
    def forget_dead_holders(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Rows held by L7R processes of this host that no longer run are released."""
        for held in (yield rows.sessions_of_host(self.database, self.host_id)):
            if held.pid is None or (held.pid != self.pid and not psutil.pid_exists(held.pid)):
                yield self.forget(held.vm_id, held.pid)

    def forget(self, vm_id: int, pid: Optional[int]) -> defer.Deferred[None]:
        log.info("releasing VM {vm_id} held by L7R pid {pid}, which is gone", vm_id=vm_id, pid=pid)
        return rows.release_session(self.database, vm_id, self.host_id, pid, epoch())
