"""VMA hooks (reference §4.7): administrator programs run on QVD events.

argv is always flat key/value pairs.  Action and provisioning hooks are
synchronous and a non-zero exit fails the operation; state hooks are
detached and their failures only logged.  Output goes to the hooks log.
"""

from __future__ import annotations

from typing import Iterable, Optional

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from qvd.http.simplerpc import RPCError
from qvd.vma import spawn
from qvd.vma.settings import VMASettings

Pairs = Iterable[tuple[str, Optional[str]]]

# x_state -> state hook key; "disconnected" fires for "stopped" (QVD 4 names)
STATE_HOOKS = {
    "connected": "vma.on_state.connected",
    "suspended": "vma.on_state.suspended",
    "stopped": "vma.on_state.disconnected",
}


class HookFailed(RPCError):
    pass


def _flatten(pairs: Pairs) -> list[str]:
    return [item for key, value in pairs for item in (key, value or "")]


class Hooks:
    log = Logger()

    def __init__(self, reactor: interfaces.IReactorProcess, settings: VMASettings):
        self.reactor = reactor
        self.settings = settings

    def configured(self, key: str) -> bool:
        return bool(self.settings.hooks.get(key))

    def _run(self, key: str, pairs: Pairs) -> Optional[Deferred]:
        path = self.settings.hooks.get(key)
        if not path:
            return None
        argv = [path] + _flatten(pairs)
        self.log.info("running hook {key}: {argv}", key=key, argv=argv)
        return spawn.run(self.reactor, argv, self.settings.hooks_log)

    def _synchronous(self, key: str, pairs: Pairs) -> Deferred:
        d = self._run(key, pairs)
        if d is None:
            return succeed(None)

        def check(code: int) -> None:
            if code != 0:
                raise HookFailed(f"{key} hook failed with exit code {code}\n")

        return d.addCallback(check)

    def action(self, action: str, x_state: str, params: Pairs = ()) -> Deferred:
        """``action`` as in the config key (``pre-connect``); argv spells it ``pre_connect``."""
        pairs = list(params) + [
            ("qvd.vm.session.state", x_state),
            ("qvd.hook.on_action", action.replace("-", "_")),
        ]
        return self._synchronous(f"vma.on_action.{action}", pairs)

    def provisioning(self, name: str, params: Pairs) -> Deferred:
        return self._synchronous(
            f"vma.on_provisioning.{name}", list(params) + [("qvd.hook.on_provisioning", name)]
        )

    def state(self, x_state: str) -> None:
        key = STATE_HOOKS.get(x_state)
        d = self._run(key, [("qvd.hook.on_state", x_state)]) if key else None
        if d is not None:
            d.addCallback(self._state_done, key)
            d.addErrback(lambda f: self.log.failure("state hook {key} did not run", f, key=key))

    def _state_done(self, code: int, key: str) -> None:
        if code != 0:
            self.log.warn("state hook {key} failed with exit code {code}", key=key, code=code)
