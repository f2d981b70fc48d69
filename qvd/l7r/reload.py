"""The L7R's graceful reload: new processes take the port, the old ones drain.

QVD 4 restarts its L7R to upgrade it, which disconnects every user.  Here a
reload (SIGHUP to the first L7R process, ``systemctl reload``, or
``qvd-node reload``, which finds that process through ``l7r.pid_file``)
starts a new generation of ``l7r.processes`` worker processes on the same
port (SO_REUSEPORT; fresh executables, so code installed since is what they
run), waits until each listens, and only then has the old generation drain:
each old process accepts what the kernel queued for it, closes its listening
socket (new connections go to the new generation only), keeps splicing its
sessions and hearing their aborts (its LISTEN connection stays), and exits once
its last connection ended or ``l7r.reload.drain_timeout`` passed, cutting what
is left the way a stop does (rows reset, the VMs' X sessions suspended).

The first process is the one systemd (or ``twistd qvd-node``, HKD beside it)
knows, so it does not exit: after its first reload it stops accepting and
drains like the workers, and from then on supervises worker generations only
(with ``l7r.processes = 1``, one worker serves the port).  Its own L7R code
is then no longer on a client's path; the HKD in the same ``qvd-node``
process runs on undisturbed, its VMs untouched.  If the new generation cannot
start (a process ends before it listens, or ``START_TIMEOUT`` passes), it is
stopped and the old one keeps serving.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional

from twisted.application.service import MultiService, Service
from twisted.internet import defer, threads
from twisted.logger import Logger

from qvd.config import Config
from qvd.l7r.workers import WorkerFailed, WorkerPool
from qvd.metrics.relay import WorkerReports

if TYPE_CHECKING:
    from qvd.l7r.service import L7RService

log = Logger()

START_TIMEOUT = 60.0  # seconds a new generation has to listen before the reload is given up


class Generations(MultiService):
    """The first L7R process's worker pools: the generation serving now (beside the
    first process itself until the first reload) and those still draining."""

    name = "l7r-generations"

    def __init__(self, l7r: "L7RService", reports: WorkerReports):
        super().__init__()
        self.l7r = l7r
        self.reactor = l7r.daemon.reactor
        self.config = l7r.daemon.config
        self.reports = reports
        self.serving: Optional[WorkerPool] = None
        self._next_slot = 0
        self._reloading = False

    def startService(self) -> None:
        super().startService()
        extra = self.config.get_int("l7r.processes") - 1
        if extra > 0:
            self.serving = self._pool(extra)

    def _pool(self, count: int) -> WorkerPool:
        """A new generation of ``count`` workers, numbered after every earlier one."""
        pool = WorkerPool(self.reactor, count, self.config.path, reports=self.reports,
                          first=self._next_slot)
        pool.setName(f"l7r-workers-{self._next_slot}")
        self._next_slot += count
        pool.setServiceParent(self)
        return pool

    @defer.inlineCallbacks
    def reload(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Start the new generation, then drain the old one (see the module)."""
        if self._reloading or not self.running:
            log.warn("L7R reload ignored: one is under way already or the L7R is stopping")
            return
        self._reloading = True
        try:
            count = max(1, self.config.get_int("l7r.processes"))
            log.info("L7R reload: starting {count} new L7R processes", count=count)
            new = self._pool(count)
            try:
                yield new.listening().addTimeout(START_TIMEOUT, self.reactor)
            except (WorkerFailed, defer.TimeoutError) as e:
                log.error("L7R reload failed ({why}): the running L7R processes keep serving",
                          why=e)
                yield defer.maybeDeferred(new.disownServiceParent)
                return
            old, self.serving = self.serving, new
            timeout = self.config.get_float("l7r.reload.drain_timeout")
            if old is not None:
                self._drain(old, timeout)
            if self.l7r.accepting:
                self.l7r.drain(timeout)
            log.info("L7R reloaded: workers {slots} serve, the earlier processes drain"
                     " (at most {timeout} s)", slots=sorted(new.workers), timeout=timeout)
        finally:
            self._reloading = False

    def _drain(self, pool: WorkerPool, timeout: float) -> None:
        """Drain ``pool``; a draining worker is not replaced, so the rows of one that
        died (SIGKILL) are released here as it ends (a new worker would do it as it
        starts)."""
        for worker in pool.workers.values():
            worker.exited.addCallback(self._release_dead)
        pool.drain(timeout).addCallback(lambda _: pool.disownServiceParent()
                                        if pool.parent is self else None)

    def _release_dead(self, result: None) -> None:
        sessions = self.l7r.sessions
        if sessions is not None and sessions.running:
            sessions.forget_dead_holders().addErrback(
                lambda f: log.warn("cannot release the rows of ended L7R processes: {error}",
                                   error=f.getErrorMessage()))


class ReloadControl(Service):
    """How the outside asks the first L7R process to reload: SIGHUP, and the pid file
    ``qvd-node reload`` reads (``l7r.pid_file``, removed at stop if still ours)."""

    name = "l7r-reload-control"

    def __init__(self, reload: Callable[[], Any], config: Config, reactor: Any):
        self.reload = reload
        self.path = config.get("l7r.pid_file")
        self.reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangup)
        threads.deferToThread(write_pid_file, self.path, os.getpid()).addErrback(
            lambda f: log.error("cannot write the pid file {path}: {error}", path=self.path,
                                error=f.getErrorMessage()))

    def _hangup(self, number: int, frame: Any) -> None:
        self.reactor.callFromThread(self._reload)

    def _reload(self) -> None:
        defer.maybeDeferred(self.reload).addErrback(
            lambda f: log.failure("the L7R reload failed", f))

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)
        return threads.deferToThread(remove_pid_file, self.path, os.getpid())


def write_pid_file(path: str, pid: int) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.{pid}"
    with open(temporary, "w", encoding="ascii") as f:
        f.write(f"{pid}\n")
    os.replace(temporary, path)


def remove_pid_file(path: str, pid: int) -> None:
    """Only if it still names ``pid`` (a daemon started since owns it otherwise)."""
    if read_pid_file(path) == pid:
        os.unlink(path)


def read_pid_file(path: str) -> Optional[int]:
    """The pid in ``path``; None when there is no such file; ``ValueError`` if it holds
    something else."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise ValueError(f"{path} does not hold a pid ({text[:20]!r})")
    return int(text)
