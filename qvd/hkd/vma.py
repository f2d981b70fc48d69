"""The HKD's side of SimpleRPC: calls with retries, and the VMA monitor.

The monitor pings; ``delay.after.ok`` after an answer, ``delay.after.error``
after a failure.  The VM is declared dead once both the failure count and
the time since the last answer exceed the limits of the phase (``starting``
limits before the VMA first answered, ``running`` limits after).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from qvd.config import Config
from qvd.http.simplerpc import SimpleRPCClient

log = Logger()

Param = tuple[str, Optional[str]]


class VMAClient:
    """SimpleRPC to one VMA with the HKD's timeout and retry settings."""

    def __init__(self, reactor: Any, config: Config, address: str, port: int,
                 failed: Callable[[str], None] = lambda method: None):
        self.clock: IReactorTime = reactor
        self.retries = config.get_int("internal.hkd.agent.rpc.retry.count")
        self.retry_delay = config.get_float("internal.hkd.agent.rpc.retry.delay")
        self.failed = failed  # told the method of each call that fails (the metrics)
        self._rpc = SimpleRPCClient(
            reactor, address, port, config.get_float("internal.hkd.agent.rpc.timeout"))

    def call_once(self, method: str, params: Sequence[Param] = ()) -> defer.Deferred[Any]:
        def count(failure: Any) -> Any:
            self.failed(method)
            return failure

        return self._rpc.call(method, list(params)).addErrback(count)

    @defer.inlineCallbacks
    def call(self, method: str, params: Sequence[Param] = ()) -> Any:
        """The call, retried ``retry.count`` more times ``retry.delay`` apart."""
        attempt = 0
        while True:
            try:
                return (yield self.call_once(method, params))
            except Exception as e:
                if attempt >= self.retries:
                    raise
                attempt += 1
                log.debug("VMA {method} failed ({error}); retry {n}", method=method, error=e,
                          n=attempt)
            yield task.deferLater(self.clock, self.retry_delay, lambda: None)


@dataclass(frozen=True)
class MonitorLimits:
    after_ok: float
    after_error: float
    max_count: int
    max_time: float

    @classmethod
    def from_config(cls, config: Config, phase: str) -> "MonitorLimits":
        """``phase`` is ``starting`` or ``running`` (QVD 4's two sets of limits)."""
        prefix = "internal.hkd.vmhandler."
        return cls(
            config.get_float(prefix + "vma_monitor.delay.after.ok"),
            config.get_float(prefix + "vma_monitor.delay.after.error"),
            config.get_int(prefix + f"vma.failed.max_count.on.{phase}"),
            config.get_float(prefix + f"vma.failed.max_time.on.{phase}"),
        )


class VMAMonitor:
    """Pings until stopped; reports ``on_alive()`` per answer and ``on_dead()`` once."""

    def __init__(
        self,
        clock: IReactorTime,
        ping: Callable[[], defer.Deferred[Any]],
        limits: MonitorLimits,
        on_alive: Callable[[], None],
        on_dead: Callable[[], None],
    ):
        self.clock = clock
        self.ping = ping
        self.limits = limits
        self.on_alive = on_alive
        self.on_dead = on_dead
        self._timer: Optional[IDelayedCall] = None
        self._active = False
        self._generation = 0

    def start(self) -> None:
        self._active = True
        self._failures = 0
        self._last_ok = self.clock.seconds()
        self._tick()

    def stop(self) -> None:
        self._active = False
        self._generation += 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _tick(self) -> None:
        self._timer = None
        generation = self._generation
        d = defer.maybeDeferred(self.ping)
        d.addCallbacks(lambda _: self._answered(generation, True),
                       lambda _: self._answered(generation, False))

    def _answered(self, generation: int, ok: bool) -> None:
        if not self._active or generation != self._generation:
            return
        if ok:
            self._failures = 0
            self._last_ok = self.clock.seconds()
            self._timer = self.clock.callLater(self.limits.after_ok, self._tick)
            self.on_alive()
            return
        self._failures += 1
        silent = self.clock.seconds() - self._last_ok
        if self._failures >= self.limits.max_count and silent > self.limits.max_time:
            self.stop()
            self.on_dead()
            return
        self._timer = self.clock.callLater(self.limits.after_error, self._tick)
