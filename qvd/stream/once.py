"""A one-time event any number of parties can wait for (it may also fail once)."""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.python.failure import Failure


class Once:
    def __init__(self) -> None:
        self.happened = False
        self._failure: Optional[Failure] = None
        self._waiters: list[defer.Deferred[None]] = []

    def wait(self) -> defer.Deferred[None]:
        """A new Deferred, fired when the event happens (at once if it has), or failed
        with the failure it happened with."""
        if self.happened:
            return defer.fail(self._failure) if self._failure is not None else defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def fire(self, failure: Optional[Failure] = None) -> None:
        if self.happened:
            return
        self.happened = True
        self._failure = failure
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if failure is None:
                waiter.callback(None)
            else:
                waiter.errback(failure)
