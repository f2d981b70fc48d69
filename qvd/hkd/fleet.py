"""The VM handlers of this host, and how commands reach them."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from twisted.logger import Logger

from qvd.db import runtimes
from qvd.hkd.context import HKDContext
from qvd.hkd.vm import VMHandler
from qvd.reactor import epoch

log = Logger()


class Fleet:
    def __init__(self, ctx: HKDContext):
        self.ctx = ctx
        self.handlers: dict[int, VMHandler] = {}
        self.accepting = True

    def _add(self, vm_id: int) -> VMHandler:
        handler = VMHandler(self.ctx, vm_id)
        self.handlers[vm_id] = handler
        handler.when_finished().addCallback(lambda _: self.handlers.pop(vm_id, None))
        return handler

    def start(self, vm_id: int) -> None:
        """A claimed ``start``: boot the VM, or put the row back if we are shutting down."""
        if vm_id in self.handlers:
            log.info("VM {vm_id} is already handled here; start ignored", vm_id=vm_id)
        elif not self.accepting:
            clearing = runtimes.clear_vm_runtime(
                self.ctx.db, vm_id, self.ctx.host_id, epoch())
            clearing.addErrback(
                lambda f: log.failure("VM {vm_id}: cannot put it back to stopped", f, vm_id=vm_id))
        else:
            self._add(vm_id).start()

    def recover(self, vm_id: int, state: str) -> None:
        self._add(vm_id).recover(state)

    def post(self, vm_id: int, event: str, **details: Any) -> None:
        handler = self.handlers.get(vm_id)
        if handler is None:
            log.warn("no handler for VM {vm_id}; {event} dropped", vm_id=vm_id, event=event)
        else:
            handler.post(event, **details)

    def post_all(self, event: str) -> None:
        for handler in list(self.handlers.values()):
            handler.post(event)

    @defer.inlineCallbacks
    def stop_all(self) -> Generator[defer.Deferred[Any], Any, None]:
        """``hkd_stop`` to every VM; after ``stopping.vms.timeout``, ``hkd_kill`` until none
        is left."""
        self.accepting = False
        self.post_all("hkd_stop")
        timeout = self.ctx.config.get_float("internal.hkd.stopping.vms.timeout")
        while self.handlers:
            waiting = defer.gatherResults(
                [h.when_finished() for h in self.handlers.values()], consumeErrors=True)
            try:
                yield waiting.addTimeout(timeout, self.ctx.reactor)
            except defer.TimeoutError:
                log.warn("{n} VMs still stopping; killing them", n=len(self.handlers))
                self.post_all("hkd_kill")
                timeout = self.ctx.config.get_float("internal.hkd.killing.vms.retry.timeout")
