"""A one-time event any number of parties can wait for."""

from __future__ import annotations

from twisted.internet import defer


class Once:
    def __init__(self) -> None:
        self.happened = False
        self._waiters: list[defer.Deferred[None]] = []

    def wait(self) -> defer.Deferred[None]:
        """A new Deferred, fired when the event happens (at once if it has)."""
        if self.happened:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def fire(self) -> None:
        if self.happened:
            return
        self.happened = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
