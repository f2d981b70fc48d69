"""Bounded waits on real external state (processes, sockets, database rows).

Where no Deferred can be waited on (another process's state), the tests poll,
always with a deadline that fails the test with what was last seen.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.task import deferLater


@inlineCallbacks
def poll(check: Callable[[], Any], until: Callable[[Any], bool], timeout: float = 30.0,
         what: str = "condition", interval: float = 0.2,
         explain: Callable[[], str] = lambda: "") -> Deferred:
    """``check()`` (a value or a Deferred) every ``interval`` s until ``until`` holds;
    a failure ends with ``explain()`` (e.g. the end of the daemons' logs)."""
    deadline = reactor.seconds() + timeout
    while True:
        value = yield maybeDeferred(check)
        if until(value):
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {timeout} s{explain()}")
        yield deferLater(reactor, interval, lambda: None)


def poll_blocking(check: Callable[[], Any], until: Callable[[Any], bool],
                  timeout: float = 30.0, what: str = "condition",
                  explain: Callable[[], str] = lambda: "") -> Deferred:
    """``poll`` for a ``check`` that blocks (a query, ``psutil``): run in a thread."""
    return poll(lambda: threads.deferToThread(check), until, timeout, what, explain=explain)
