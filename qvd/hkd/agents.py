"""The HKD's periodic agents: heartbeat, host commands, VM commands, expiration, cluster,
and the sweep of expired tokens.

Each is a ``Periodic`` service (NOTIFY and/or polling) whose action is one
short conversation with QVD-DB.
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Generator

from twisted.internet import defer, threads
from twisted.logger import Logger

from qvd.db import channels, hosts, runtimes, tokens
from qvd.db.listener import Listener
from qvd.hkd import resources
from qvd.hkd.context import HKDContext
from qvd.hkd.fleet import Fleet
from qvd.stream.once import Once
from qvd.hkd.periodic import Periodic
from qvd.reactor import epoch

log = Logger()


def _every(ctx: HKDContext, key: str) -> Callable[[bool], float]:
    return lambda failed: ctx.config.get_float(key)


class Heartbeat(Periodic):
    """``ok_ts``, ``pid`` and live free resources every ``ticker.delay``.

    No row updated means another node marked us ``lost``: ``on_lost`` (fencing).
    No success for ``ticker.timeout`` means we cannot vouch for our VMs: ``on_fatal``.
    """

    def __init__(self, ctx: HKDContext, on_lost: Callable[[], None],
                 on_fatal: Callable[[str], None]):
        super().__init__("heartbeat", ctx.reactor, self._tick,
                         _every(ctx, "internal.hkd.agent.ticker.delay"))
        self.ctx = ctx
        self.on_lost = on_lost
        self.on_fatal = on_fatal
        self.first = Once()
        self._last_ok: float = ctx.reactor.seconds()

    def age(self) -> float:
        """Seconds since the last heartbeat that reached QVD-DB (or since the start)."""
        return self.clock.seconds() - self._last_ok

    @defer.inlineCallbacks
    def _tick(self) -> Generator[defer.Deferred[Any], Any, None]:
        try:
            free_ram, free_cpu = yield threads.deferToThread(resources.measure)
            beat = yield hosts.heartbeat(
                self.ctx.db, self.ctx.host_id, os.getpid(), free_ram, free_cpu)
        except Exception:
            silent = self.clock.seconds() - self._last_ok
            if self.first.happened and silent > self.ctx.config.get_float(
                    "internal.hkd.agent.ticker.timeout"):
                self.on_fatal(f"no successful heartbeat for {silent:.0f}s")
            raise
        if not beat:
            self.on_lost()
            return
        self._last_ok = self.clock.seconds()
        self.first.fire()


def host_commands(ctx: HKDContext, listener: Listener, on_stop: Callable[[str], None]) -> Periodic:
    """``host_runtimes.cmd``: only ``stop`` exists (an orderly HKD shutdown)."""

    @defer.inlineCallbacks
    def poll() -> Generator[defer.Deferred[Any], Any, None]:
        for command in (yield hosts.take_host_cmd(ctx.db, ctx.host_id)):
            if command == "stop":
                on_stop("host command stop")
            else:
                log.warn("unknown host command {cmd!r} ignored", cmd=command)

    return Periodic("host-commands", ctx.reactor, poll,
                    _every(ctx, "internal.hkd.agent.command_handler.delay"),
                    listener=listener, channel=channels.host_commands(ctx.host_id))


def vm_commands(ctx: HKDContext, listener: Listener, fleet: Fleet) -> Periodic:
    """``vm_runtimes.vm_cmd``: stops first, then starts of ``stopped`` VMs (claimed atomically)."""

    @defer.inlineCallbacks
    def poll() -> Generator[defer.Deferred[Any], Any, None]:
        for vm_id in (yield runtimes.claim_vm_stops(ctx.db, ctx.host_id)):
            fleet.post(vm_id, "stop")
        for vm_id in (yield runtimes.claim_vm_starts(ctx.db, ctx.host_id, epoch())):
            fleet.start(vm_id)

    return Periodic("vm-commands", ctx.reactor, poll,
                    _every(ctx, "internal.hkd.agent.vm_command_handler.delay"),
                    listener=listener, channel=channels.vm_commands(ctx.host_id))


def expiration_monitor(ctx: HKDContext, fleet: Fleet) -> Periodic:
    """Hard expiration stops the VM; soft expiration reaches the VMA's ``expire`` hook."""

    @defer.inlineCallbacks
    def check() -> Generator[defer.Deferred[Any], Any, None]:
        for expiry in (yield runtimes.expired_vms(ctx.db, ctx.host_id)):
            if expiry.hard_due:
                log.info("VM {vm_id} passed its hard expiration {hard}: stopping it",
                         vm_id=expiry.vm_id, hard=expiry.hard)
                fleet.post(expiry.vm_id, "stop")
            elif expiry.soft_due:
                fleet.post(expiry.vm_id, "expired", soft=expiry.soft, hard=expiry.hard)

    delay = "internal.hkd.agent.expiration_monitor.delay"
    return Periodic("expiration-monitor", ctx.reactor, check,
                    lambda failed: ctx.config.get_float(delay) * random.uniform(0.95, 1.0),
                    run_at_start=False)


def cluster_monitor(ctx: HKDContext) -> Periodic:
    """Other hosts silent for ``cluster.node.timeout`` become ``lost``; their VMs and
    sessions are released, and L7Rs holding sessions of stopped VMs are told to abort."""

    @defer.inlineCallbacks
    def check() -> Generator[defer.Deferred[Any], Any, None]:
        released = yield runtimes.release_lost_hosts(
            ctx.db, ctx.host_id, ctx.config.get_float("internal.hkd.cluster.node.timeout"),
            epoch())
        for host_id in released.lost:
            log.warn("host {host_id} stopped answering: marked lost, its VMs released",
                     host_id=host_id)
        for host_id in released.l7r_hosts:
            yield channels.notify(ctx.db, channels.user_commands(host_id))

    def delay(failed: bool) -> float:
        prefix = "internal.hkd.agent.cluster_monitor."
        base = ctx.config.get_float(prefix + ("long_delay" if failed else "delay"))
        return base + random.uniform(0, ctx.config.get_float(prefix + "fuzzy_delay"))

    return Periodic("cluster-monitor", ctx.reactor, check, delay, run_at_start=False)


def token_sweeper(ctx: HKDContext) -> Periodic:
    """Expired Bearer tokens and their stored auth params are deleted (ours: QVD 4 kept
    every row; an expired token is also deleted when someone tries it)."""

    def sweep() -> defer.Deferred[None]:
        return tokens.delete_expired_tokens(ctx.db, epoch())

    return Periodic("token-sweeper", ctx.reactor, sweep,
                    _every(ctx, "internal.hkd.agent.token_sweeper.delay"))
