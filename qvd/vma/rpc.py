"""The VMA's SimpleRPC methods (reference §3.2)."""

from __future__ import annotations

from typing import Callable

from twisted.internet import interfaces
from twisted.internet.defer import inlineCallbacks

from qvd.http.simplerpc import Method, Params
from qvd.vma.hooks import Hooks
from qvd.vma.session import XSession

EXPIRATION_KEYS = ("vm.expiration.soft", "vm.expiration.hard")


class VMAMethods:
    def __init__(
        self,
        session: XSession,
        hooks: Hooks,
        clock: interfaces.IReactorTime,
        power_off: Callable[[], object],
    ):
        self.session = session
        self.hooks = hooks
        self.clock = clock
        self.power_off = power_off

    def methods(self) -> dict[str, Method]:
        return {
            "ping": self.ping,
            "x_state": lambda params: self.session.x_state(),
            "x_start": self.session.x_start,
            "x_suspend": lambda params: self.session.x_suspend(),
            "x_stop": lambda params: self.session.x_stop(),
            "poweroff": self.poweroff,
            "expire": self.expire,
        }

    @staticmethod
    def ping(params: Params) -> int:
        return 1

    @inlineCallbacks
    def poweroff(self, params: Params):
        """Answers 1 once the hook succeeded, then powers off (QVD 4 answered an error)."""
        yield self.hooks.action("poweroff", self.session.x_state())
        self.clock.callLater(0, self.power_off)
        return 1

    @inlineCallbacks
    def expire(self, params: Params):
        """The soft expiration hook; the expiration times it got go to the hook too."""
        pairs = [(key, value) for key, value in params if key in EXPIRATION_KEYS]
        yield self.hooks.action("expire", self.session.x_state(), pairs)
        return 1
