"""One VM's lifecycle on this host (QVD 4's VM handler, reference §3).

A handler runs one flow (start, or recovery of a VM a previous HKD left)
as a coroutine.  Events (commands, VMA monitor verdicts, the process
exiting, HKD shutdown) are queued; the flow consumes them only where it
waits for them, so an event arriving during a step is acted on when the
step is over (QVD 4's "delayed" events), and ignored where the phase table
has no rule for it.

DB-visible states: ``starting`` (written by the command claim), then
``running``/``debugging``, ``stopping``, ``zombie``, and ``stopped`` when
the runtime row is cleared.  Every write is conditional on ``host_id`` =
this host, so a VM the cluster monitor released stays released.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer, task
from twisted.logger import Logger

from qvd.db import runtimes
from qvd.db.runtimes import VMSpec
from qvd.hkd.context import HKDContext
from qvd.hkd.hypervisor import IVMInstance, LaunchError
from qvd.stream.once import Once
from qvd.hkd.vma import MonitorLimits, VMAClient, VMAMonitor
from qvd.reactor import epoch

log = Logger()

Event = tuple[str, dict[str, Any]]

# phase -> event -> next phase, or how to stop: graceful (VMA poweroff first),
# hard (signals), cleanup (the process is already gone); "expire" = soft expiration.
PHASES: dict[str, dict[str, str]] = {
    "starting": {"alive": "running", "dead": "hard", "debug": "debugging", "stop": "graceful",
                 "exited": "cleanup", "hkd_stop": "graceful", "hkd_kill": "hard"},
    "running": {"dead": "hard", "debug": "debugging", "stop": "graceful", "exited": "cleanup",
                "hkd_stop": "graceful", "hkd_kill": "hard", "expired": "expire"},
    "debugging": {"alive": "running", "stop": "hard", "exited": "cleanup", "hkd_stop": "hard",
                  "hkd_kill": "hard"},
}


class VMHandler:
    def __init__(self, ctx: HKDContext, vm_id: int):
        self.ctx = ctx
        self.vm_id = vm_id
        self.state = "new"
        self.instance: Optional[IVMInstance] = None
        self._vma: Optional[VMAClient] = None
        self._monitor: Optional[VMAMonitor] = None
        self._events: list[Event] = []
        self._waiter: Optional[defer.Deferred[Event]] = None
        self._heavy = False
        self._counted = False  # run_ok counts boots, not returns from debugging
        self._hkd_stopping = False
        self._finished = Once()

    # -- interface for the HKD ----------------------------------------------------------
    def start(self) -> None:
        """Boot the VM whose ``start`` command was just claimed."""
        self._run(self._start())

    def recover(self, db_state: str) -> None:
        """Take over a VM found ``db_state`` at HKD start: adopt it, or clean up after it."""
        self._run(self._recover(db_state))

    def post(self, event: str, **details: Any) -> None:
        if event in ("hkd_stop", "hkd_kill"):
            self._hkd_stopping = True
        self._events.append((event, details))
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            waiter.callback(self._events.pop(0))

    def when_finished(self) -> defer.Deferred[None]:
        return self._finished.wait()

    @property
    def finished(self) -> bool:
        return self._finished.happened

    # -- flows --------------------------------------------------------------------------
    def _run(self, flow: defer.Deferred[None]) -> None:
        def failed(reason: Any) -> defer.Deferred[None]:
            log.failure("VM {vm_id}: unexpected error in state {state}", reason,
                        vm_id=self.vm_id, state=self.state)
            return self._zombie()

        flow.addErrback(failed).addErrback(
            lambda f: log.failure("VM {vm_id}: cannot clean up", f, vm_id=self.vm_id))
        flow.addBoth(lambda _: self._finish())

    def _finish(self) -> None:
        self._stop_monitor()
        self._give_heavy()
        self.state = "stopped"
        self._finished.fire()

    @defer.inlineCallbacks
    def _start(self) -> Generator[defer.Deferred[Any], Any, None]:
        self.state = "starting"
        try:
            spec = yield self._load()
            yield self._take_heavy()
            self.instance = yield self.ctx.hypervisor.launch(spec)
        except LaunchError as e:
            log.error("VM {vm_id} cannot start: {error}", vm_id=self.vm_id, error=e)
            yield self._release_and_clear()
            return
        self._attach()
        saved = yield runtimes.save_vm_runtime(
            self.ctx.db, self.vm_id, self.ctx.host_id, self.instance.address,
            self.instance.ports, self.instance.pid, spec.di_id)
        if not saved:
            log.warn("VM {vm_id} was taken away from this host while starting", vm_id=self.vm_id)
            yield self._stop("hard")
            return
        yield runtimes.count_vm_run(self.ctx.db, self.vm_id, "run_attempts")
        log.info("VM {vm_id} launched (pid {pid}), waiting for its VMA", vm_id=self.vm_id,
                 pid=self.instance.pid)
        yield self._watch("starting")

    @defer.inlineCallbacks
    def _recover(self, db_state: str) -> Generator[defer.Deferred[Any], Any, None]:
        self.state = db_state
        self.instance = yield self.ctx.hypervisor.adopt(self.vm_id)
        if self.instance is None:
            log.info("VM {vm_id} was {state} but its process is gone: releasing it",
                     vm_id=self.vm_id, state=db_state)
            self.state = "zombie"
            yield self._save_state("zombie")
            yield self._release_and_clear()
            return
        log.info("adopted VM {vm_id} ({state}, pid {pid})", vm_id=self.vm_id, state=db_state,
                 pid=self.instance.pid)
        self._counted = db_state != "starting"
        self._attach()
        if db_state not in PHASES:
            yield self._stop("hard")
            return
        if db_state == "starting":
            yield self._take_heavy()
        yield self._watch(db_state)

    def _attach(self) -> None:
        assert self.instance is not None
        self._vma = VMAClient(self.ctx.reactor, self.ctx.config, self.instance.address,
                              self.instance.ports["vma"], self.ctx.metrics.vma_rpc_failed)
        self.instance.when_exited().addCallback(lambda _: self.post("exited"))

    @defer.inlineCallbacks
    def _load(self) -> Generator[defer.Deferred[Any], Any, VMSpec]:
        specs = yield runtimes.vm_start_specs(self.ctx.db, self.vm_id)
        if len(specs) != 1:
            raise LaunchError("the VM is gone, or no unblocked DI of its OSF carries its di_tag"
                              if not specs else "several DIs of its OSF carry its di_tag")
        return specs[0]

    # -- watching a live VM ---------------------------------------------------------------
    @defer.inlineCallbacks
    def _watch(self, phase: str) -> Generator[defer.Deferred[Any], Any, None]:
        while True:
            if phase != "starting":
                entered = yield self._enter(phase)
                if not entered:
                    log.warn("VM {vm_id} was taken away from this host", vm_id=self.vm_id)
                    yield self._stop("hard")
                    return
            self._start_monitor(phase)
            action = yield self._next_action(phase)
            self._stop_monitor()
            if action not in PHASES:
                break
            phase = action
        yield self._stop(action)

    @defer.inlineCallbacks
    def _enter(self, phase: str) -> Generator[defer.Deferred[Any], Any, bool]:
        self.state = phase
        if not (yield self._save_state(phase)):
            return False
        if phase == "running" and not self._counted:
            self._counted = True
            yield runtimes.count_vm_run(self.ctx.db, self.vm_id, "run_ok")
        self._give_heavy()
        log.info("VM {vm_id} is {state}", vm_id=self.vm_id, state=phase)
        return True

    @defer.inlineCallbacks
    def _next_action(self, phase: str) -> Generator[defer.Deferred[Any], Any, str]:
        while True:
            event, details = yield self._next_event()
            action = PHASES[phase].get(event)
            if action == "expire":
                yield self._expire(details)
                self._start_monitor(phase)
            elif action is not None:
                log.debug("VM {vm_id}: {event} in {phase} -> {action}", vm_id=self.vm_id,
                          event=event, phase=phase, action=action)
                return action

    def _next_event(self) -> defer.Deferred[Event]:
        if self._events:
            return defer.succeed(self._events.pop(0))
        self._waiter = defer.Deferred()
        return self._waiter

    def _start_monitor(self, phase: str) -> None:
        self._stop_monitor()
        vma = self._vma
        assert vma is not None
        limits = MonitorLimits.from_config(
            self.ctx.config, "starting" if phase == "starting" else "running")
        self._monitor = VMAMonitor(self.ctx.reactor, lambda: vma.call_once("ping"),
                                   limits, self._alive, lambda: self._dead(phase))
        self._monitor.start()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    def _alive(self) -> None:
        self.post("alive")
        noting = runtimes.touch_vma_ok(self.ctx.db, self.vm_id, self.ctx.host_id, epoch())
        noting.addErrback(
            lambda f: log.warn("VM {vm_id}: cannot record the VMA's answer: {error}",
                               vm_id=self.vm_id, error=f.getErrorMessage()))

    def _dead(self, phase: str) -> None:
        if phase == "debugging":  # keep waiting for the VMA to come back
            self._start_monitor(phase)
            return
        log.warn("VM {vm_id}: the VMA stopped answering", vm_id=self.vm_id)
        self.post("debug" if self.ctx.config.get_bool("internal.vm.debug.enable") else "dead")

    @defer.inlineCallbacks
    def _expire(self, details: dict[str, Any]) -> Generator[defer.Deferred[Any], Any, None]:
        """Soft expiration: tell the VMA (its ``expire`` hook); errors are only logged."""
        params = [(f"vm.expiration.{k}", details[k]) for k in ("soft", "hard") if details.get(k)]
        assert self._vma is not None
        try:
            yield self._vma.call_once("expire", params)
        except Exception as e:
            log.warn("VM {vm_id}: expire RPC failed: {error}", vm_id=self.vm_id, error=e)

    # -- stopping -------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _stop(self, mode: str) -> Generator[defer.Deferred[Any], Any, None]:
        self.state = "stopping"
        log.info("VM {vm_id} stopping ({mode})", vm_id=self.vm_id, mode=mode)
        yield self._save_state("stopping")
        yield self._take_heavy()
        if mode == "graceful":
            mode = yield self._shutdown()
        if mode == "hard" and not (yield self._kill()):
            yield self._zombie()
            return
        yield self._release_and_clear()

    @defer.inlineCallbacks
    def _shutdown(self) -> Generator[defer.Deferred[Any], Any, str]:
        """``poweroff`` through the VMA; ``hard`` if it fails or the VM outlives the timeout."""
        assert self._vma is not None
        try:
            yield self._vma.call("poweroff")
        except Exception as e:
            log.info("VM {vm_id}: poweroff failed ({error}), killing it", vm_id=self.vm_id, error=e)
            return "hard"
        gone = yield self._exit_within(self.ctx.timeout("stopping.shutdown.waiting_for_*"))
        return "cleanup" if gone else "hard"

    @defer.inlineCallbacks
    def _kill(self) -> Generator[defer.Deferred[Any], Any, bool]:
        """TERM, then KILL (QVD 4 never sent KILL); whether the process is gone."""
        for signal in ("TERM", "KILL"):
            if self.instance is None:
                return True
            self.instance.signal(signal)
            if (yield self._exit_within(self.ctx.timeout("stopping.stop.waiting_for_*"))):
                return True
        return False

    @defer.inlineCallbacks
    def _exit_within(self, seconds: float) -> Generator[defer.Deferred[Any], Any, bool]:
        if self.instance is None:
            return True
        try:
            yield self.instance.when_exited().addTimeout(seconds, self.ctx.reactor)
        except defer.TimeoutError:
            return False
        return True

    @defer.inlineCallbacks
    def _zombie(self) -> Generator[defer.Deferred[Any], Any, None]:
        """A VM that will not die: keep killing it; give up only when the HKD gives up."""
        self.state = "zombie"
        yield self._save_state("zombie")
        while self.instance is not None and not (yield self._exit_within(0)):
            if any(event == "hkd_kill" for event, _ in self._events):
                log.error("VM {vm_id} left as a zombie (pid {pid})", vm_id=self.vm_id,
                          pid=self.instance.pid)
                return
            self.instance.signal("KILL")
            if not (yield self._exit_within(self.ctx.timeout("zombie.reap.waiting_for_*"))):
                yield task.deferLater(self.ctx.reactor, self.ctx.timeout("zombie.reap.delaying"),
                                      lambda: None)
        yield self._release_and_clear()

    # -- database and resources -------------------------------------------------------------
    @defer.inlineCallbacks
    def _save_state(self, state: str) -> Generator[defer.Deferred[Any], Any, bool]:
        try:
            return (yield runtimes.set_vm_state(
                self.ctx.db, self.vm_id, self.ctx.host_id, state, epoch()))
        except Exception as e:
            log.warn("VM {vm_id}: cannot save state {state}: {error}", vm_id=self.vm_id,
                     state=state, error=e)
            return False

    @defer.inlineCallbacks
    def _release_and_clear(self) -> Generator[defer.Deferred[Any], Any, None]:
        """The end of every path: backend resources freed, the row back to ``stopped``."""
        yield self.ctx.hypervisor.release(self.vm_id)
        while True:
            try:
                yield runtimes.clear_vm_runtime(
                    self.ctx.db, self.vm_id, self.ctx.host_id, epoch())
            except Exception as e:
                log.warn("VM {vm_id}: cannot clear its runtime row: {error}", vm_id=self.vm_id,
                         error=e)
                if self._hkd_stopping:  # the VM is gone: the next HKD start clears its row
                    log.warn("VM {vm_id}: row left for the next HKD start", vm_id=self.vm_id)
                    return
                yield task.deferLater(self.ctx.reactor, self.ctx.timeout("zombie.db.delaying"),
                                      lambda: None)
            else:
                log.info("VM {vm_id} stopped", vm_id=self.vm_id)
                return

    @defer.inlineCallbacks
    def _take_heavy(self) -> Generator[defer.Deferred[Any], Any, None]:
        if not self._heavy:
            yield self.ctx.heavy.acquire()
            self._heavy = True

    def _give_heavy(self) -> None:
        if self._heavy:
            self._heavy = False
            self.ctx.heavy.release()
