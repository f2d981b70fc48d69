"""``twistd qvd-hkd``: the HKD service tree and its start-up and shutdown sequences.

Start (reference §2.2), once its ``NodeDaemon`` has checked the schema and
opened the database and configuration: the node's lock and hypervisor, host
``starting``, first heartbeat, recovery of the VMs a previous HKD left,
agents, host ``running``, VM commands.  Stop (SIGTERM, host command
``stop``, fencing, a heartbeat timeout): no more VM commands, host
``stopping``, every VM stopped, agents stopped, host ``stopped``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import sys
from typing import Any, Callable, Generator, Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from qvd.config import Config
from qvd.daemon import (STARTUP_ERRORS, NodeDaemon, StartError, cannot_start, for_twistd,
                        prepare)
from qvd.daemon import Options
from qvd.db import hosts, runtimes
from qvd.hkd import agents
from qvd.hkd.context import HKDContext
from qvd.hkd.fleet import Fleet
from qvd.hkd.commands import CommandError
from qvd.hkd.hypervisor import LaunchError, check_hypervisor, make_hypervisor
from qvd.hkd.periodic import Periodic
from qvd.metrics.database import DatabaseCollector
from qvd.metrics.server import metrics_service
from qvd.metrics.snapshot import take
from qvd.stream.once import Once

log = Logger()

__all__ = ["Options", "makeService"]


def lock_node(config: Config) -> None:
    """Hold ``internal.hkd.lock.path`` for the life of the process: one HKD per node.

    The descriptor is never closed: the kernel drops the lock when the process
    ends.  The VMAs do not inherit it (spawnProcess closes other descriptors),
    so a restarted HKD gets it at once and adopts them.
    """
    path = config.get("internal.hkd.lock.path")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartError(f"another qvd-hkd is running on this node (it holds {path})") from None


def prepare_hkd(config: Config) -> None:
    """What only the HKD needs before the reactor runs: its hypervisor, and the node's lock."""
    check_hypervisor(config)
    lock_node(config)


class HKDService(MultiService):
    """One node's HKD, on its daemon's configuration, database and LISTEN connection;
    ``exit`` ends the process once an internal stop is complete."""

    name = "qvd-hkd"

    def __init__(self, daemon: NodeDaemon, *, exit: Optional[Callable[[], None]] = None):
        super().__init__()
        self.daemon = daemon
        self.config = daemon.config
        self.host_id = daemon.host_id
        self.reactor = daemon.reactor
        self.exit = exit or self._stop_reactor
        self.failed = False  # stopped by a fatal error or fencing, not on request
        self.ctx: Optional[HKDContext] = None
        self.fleet: Optional[Fleet] = None
        self.host_state: Optional[str] = None
        self._vm_commands: Optional[Periodic] = None
        self._booted = Once()
        self._stopped = Once()
        self._stopping = False

    # -- start ----------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        d = self._boot()
        d.addErrback(self._boot_failed)
        d.addBoth(lambda _: self._booted.fire())

    def _boot_failed(self, failure: Failure) -> None:
        if failure.check(*STARTUP_ERRORS, LaunchError, CommandError):
            self._fatal(failure.getErrorMessage())
        else:
            self._fatal("start-up failed", failure)

    @defer.inlineCallbacks
    def _boot(self) -> Generator[defer.Deferred[Any], Any, None]:
        db, listener = self.daemon.database, self.daemon.listener
        ctx = self.ctx = HKDContext(self.config, db, self.reactor, self.host_id,
                                    make_hypervisor(self.config, self.reactor))
        self.fleet = Fleet(ctx)
        yield ctx.hypervisor.start()
        yield self._set_host_state("starting")
        heartbeat = agents.Heartbeat(ctx, self._fence, self._fatal)
        heartbeat.setServiceParent(self)
        self._serve_metrics(heartbeat)
        yield heartbeat.first.wait()
        unfinished = yield runtimes.unfinished_vms(db, self.host_id)
        for vm_id in (yield ctx.hypervisor.reap_strays({vm.vm_id for vm in unfinished})):
            log.warn("killed VM {vm_id}: it was still running here but QVD-DB gave it away",
                     vm_id=vm_id)
        for vm in unfinished:
            self.fleet.recover(vm.vm_id, vm.vm_state)
        for agent in (agents.host_commands(ctx, listener, self._request_stop),
                      agents.expiration_monitor(ctx, self.fleet),
                      agents.cluster_monitor(ctx), agents.token_sweeper(ctx)):
            agent.setServiceParent(self)
        if self._stopping:
            return
        yield self._set_host_state("running")
        self._vm_commands = agents.vm_commands(ctx, listener, self.fleet)
        self._vm_commands.setServiceParent(self)
        log.info("HKD running as host {host_id} ({hypervisor} hypervisor)", host_id=self.host_id,
                 hypervisor=ctx.hypervisor.name)

    def _serve_metrics(self, heartbeat: agents.Heartbeat) -> None:
        """``hkd.metrics.*``: this HKD's metrics (``qvd.metrics.hkd``) on its admin listener."""
        ctx, fleet = self.ctx, self.fleet
        assert ctx is not None and fleet is not None
        ctx.metrics.registry.register(DatabaseCollector(ctx.db, self.daemon.listener))
        ctx.metrics.watch(lambda: [handler.state for handler in fleet.handlers.values()],
                          lambda: (ctx.heavy.held, ctx.heavy.waiting), heartbeat.age)
        server = metrics_service(self.config, "hkd", self.reactor,
                                 lambda: take(ctx.metrics.registry))
        if server is not None:
            server.setServiceParent(self)

    @defer.inlineCallbacks
    def _set_host_state(self, state: str) -> Generator[defer.Deferred[Any], Any, None]:
        if not (yield hosts.set_host_state(self.daemon.database, self.host_id, state)):
            raise StartError(f"host {self.host_id} has no host_runtimes row")
        self.host_state = state

    # -- stop -----------------------------------------------------------------------------
    def stopService(self) -> defer.Deferred[None]:
        return self.shutdown()

    def shutdown(self) -> defer.Deferred[None]:
        """Stop everything once; every caller's Deferred fires when it is done."""
        if not self._stopping:
            self._stopping = True
            stopping = self._shut_down()
            stopping.addErrback(lambda f: log.failure("HKD shutdown failed", f))
            stopping.addBoth(lambda _: self._stopped.fire())
        return self._stopped.wait()

    @defer.inlineCallbacks
    def _shut_down(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self._booted.wait()
        if self._vm_commands is not None:
            yield self._vm_commands.disownServiceParent()
        if self.host_state is not None:
            yield self._note_state("stopping")
        if self.fleet is not None:
            yield self.fleet.stop_all()
        if self.ctx is not None:
            yield self._stop_hypervisor(self.ctx)
        yield super().stopService()
        if self.host_state is not None:
            yield self._note_state("stopped")
        if self.ctx is not None:
            self.ctx.close()
        log.info("HKD stopped")

    @defer.inlineCallbacks
    def _stop_hypervisor(self, ctx: HKDContext) -> Generator[defer.Deferred[Any], Any, None]:
        try:
            yield ctx.hypervisor.stop()
        except Exception as e:
            log.error("cannot stop the {name} hypervisor: {error}", name=ctx.hypervisor.name,
                      error=e)

    @defer.inlineCallbacks
    def _note_state(self, state: str) -> Generator[defer.Deferred[Any], Any, None]:
        try:
            yield self._set_host_state(state)
        except Exception as e:
            log.error("cannot set host state {state}: {error}", state=state, error=e)

    def _request_stop(self, why: str) -> None:
        log.info("HKD stopping: {why}", why=why)
        self.shutdown().addCallback(lambda _: self.exit())

    def _fatal(self, why: str, failure: Optional[Failure] = None) -> None:
        if failure is None:
            log.critical("HKD cannot go on: {why}", why=why)
        else:
            log.failure("HKD cannot go on: {why}", failure, LogLevel.critical, why=why)
        self.failed = True
        self.shutdown().addCallback(lambda _: self.exit())

    def _fence(self) -> None:
        """Another node declared us lost and released our VMs: kill them before they run twice."""
        log.error("this host was marked lost (or removed) in QVD-DB: killing its VMs (fencing)")
        if self.fleet is not None:
            self.fleet.post_all("hkd_kill")
        self.failed = True
        self._request_stop("fenced")

    def _stop_reactor(self) -> None:
        if self.failed:  # twistd exits 0 whatever happened: supervisors must see a failure
            atexit.register(_exit_failed)
        if self.reactor.running:
            self.reactor.stop()


def _exit_failed() -> None:
    """The last thing the process does after twistd's own clean-up: exit status 1."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)


def makeService(options: usage.Options) -> NodeDaemon:
    """``twistd qvd-hkd``: a daemon holding the HKD."""
    try:
        config, host_id = prepare(options["config"], "qvd-hkd")
        prepare_hkd(config)
        daemon = for_twistd(NodeDaemon(config, host_id, "qvd-hkd"), options)
    except STARTUP_ERRORS as e:
        raise cannot_start("qvd-hkd", e) from None
    HKDService(daemon).setServiceParent(daemon)
    return daemon
