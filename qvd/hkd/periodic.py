"""Run an action now, on a NOTIFY, after a LISTEN reconnect and every few seconds.

QVD 4's agents all share this shape: notifications only shorten the wait,
polling keeps them correct when a NOTIFY is lost.  Runs never overlap: a
trigger during a run causes exactly one more run after it.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.db import DatabaseError
from qvd.db.listener import Listener

log = Logger()

Action = Callable[[], "defer.Deferred[Any]"]
Delay = Callable[[bool], float]  # seconds until the next run, given "the last run failed"


@dataclass(eq=False, repr=False)  # services compare and hash by identity, as Service's do
class Periodic(Service):
    name: str = field()  # required: without field() Service's ``name = None`` is a default
    clock: IReactorTime
    action: Action
    delay: Delay
    _: KW_ONLY
    listener: Optional[Listener] = None
    channel: Optional[str] = None  # NOTIFYs on it trigger a run (needs ``listener``)
    run_at_start: bool = True
    _timer: Optional[IDelayedCall] = field(default=None, init=False)
    _running_action: Optional[defer.Deferred[None]] = field(default=None, init=False)
    _again: bool = field(default=False, init=False)
    _idle_waiters: list[defer.Deferred[None]] = field(default_factory=list, init=False)

    def startService(self) -> None:
        super().startService()
        listening: defer.Deferred[None] = defer.succeed(None)
        if self.listener is not None:
            self.listener.on_reconnect(self.trigger)
            if self.channel is not None:
                listening = self.listener.listen(self.channel, self._notified)
        listening.addErrback(lambda f: log.failure("{name}: cannot LISTEN", f, name=self.name))
        listening.addCallback(lambda _: self._first())

    def _first(self) -> None:
        if self.run_at_start:
            self.trigger()
        else:
            self._schedule(False)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self._cancel()
        stops = []
        if self.listener is not None:
            self.listener.remove_on_reconnect(self.trigger)
            if self.channel is not None:
                stops.append(self.listener.unlisten(self.channel, self._notified))
        if self._running_action is not None:
            waiting: defer.Deferred[None] = defer.Deferred()
            self._idle_waiters.append(waiting)
            stops.append(waiting)
        return defer.gatherResults(stops, consumeErrors=True).addCallback(lambda _: None)

    def _notified(self, channel: str, payload: str) -> None:
        self.trigger()

    def trigger(self) -> None:
        """Run now, or once more right after the run under way."""
        if not self.running:
            return
        if self._running_action is not None:
            self._again = True
            return
        self._cancel()
        self._again = False
        d = defer.maybeDeferred(self.action)
        self._running_action = d
        d.addCallbacks(lambda _: self._done(False), self._failed)

    def _failed(self, reason: Failure) -> None:
        if reason.check(DatabaseError):  # an outage, not a bug: the next run retries
            log.warn("{name} failed: {error}", name=self.name, error=reason.value)
        else:
            log.failure("{name} failed", reason, name=self.name)
        self._done(True)

    def _done(self, failed: bool) -> None:
        self._running_action = None
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if not self.running:
            return
        if self._again:
            self.trigger()
        else:
            self._schedule(failed)

    def _schedule(self, failed: bool) -> None:
        self._cancel()
        if self.running:
            self._timer = self.clock.callLater(max(0.0, self.delay(failed)), self.trigger)

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
