"""Waiting for a condition that only polling can see (a VM's state, a port opening),
with a deadline: the one shape of every such loop of the L7R."""

from __future__ import annotations

from typing import Any, Callable, Generator, Optional, TypeVar

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

Result = TypeVar("Result")


@defer.inlineCallbacks
def poll_until(
    clock: IReactorTime,
    timeout: float,
    interval: float,
    step: Callable[[], Any],
    expired: Callable[[], Optional[Exception]],
) -> Generator[defer.Deferred[Any], Any, Any]:
    """Run ``step`` (a value or a Deferred) until it gives something other than None,
    which is the result; ``interval`` seconds between tries.  Once ``timeout`` seconds
    have passed, a try that gives None raises ``expired()`` (unless that is None:
    keep waiting).  ``step`` may raise to stop early."""
    deadline = clock.seconds() + timeout
    while True:
        result = yield defer.maybeDeferred(step)
        if result is not None:
            return result
        if clock.seconds() >= deadline:
            error = expired()
            if error is not None:
                raise error
        yield task.deferLater(clock, interval, lambda: None)
