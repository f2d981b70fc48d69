"""The VM state machine's rarer paths, in process, on a real QVD-DB.

The backend is a fake (``FakeHypervisor``): it is the only way to have a VM
process that ignores SIGKILL (the zombie path) and to see exactly which
signals were sent.  The VMA side is a real SimpleRPC server on loopback,
answering or not as the test decides.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

from twisted.internet import defer, reactor
from twisted.internet.defer import inlineCallbacks
from zope.interface import implementer

from qvd.db.pool import Database
from qvd.hkd.context import HKDContext
from qvd.db.runtimes import VMSpec
from qvd.hkd.hypervisor import IHypervisor, IVMInstance
from qvd.stream.once import Once
from qvd.hkd.vm import VMHandler
from qvd.http.server import QVDHTTPServerFactory
from qvd.http.simplerpc import RPCError, SimpleRPCHandler
from tests.support.hkd import HKDTestCase

FAKE_TIMERS = """\
internal.hkd.fake.timeout.on_state.stopping.shutdown.waiting_for_fake = 0.5
internal.hkd.fake.timeout.on_state.stopping.stop.waiting_for_fake = 0.3
internal.hkd.fake.timeout.on_state.zombie.reap.waiting_for_fake = 0.2
internal.hkd.fake.timeout.on_state.zombie.reap.delaying = 0.2
internal.hkd.fake.timeout.on_state.zombie.db.delaying = 0.2
"""
_pids = itertools.count(900000)


class FakeVMA:
    """A fake VMA: a real SimpleRPC server whose ``answering`` decides its fate."""

    def __init__(self) -> None:
        self.answering = True
        self.calls: list[str] = []
        self.instance: Optional["FakeInstance"] = None
        methods = {name: self._method(name) for name in ("ping", "poweroff", "expire")}
        self.port = reactor.listenTCP(
            0, QVDHTTPServerFactory(SimpleRPCHandler(methods), reactor), interface="127.0.0.1")

    def _method(self, name: str):
        def call(params: Any) -> int:
            self.calls.append(name)
            if not self.answering:
                raise RPCError("not now")
            if name == "poweroff" and self.instance is not None:
                reactor.callLater(0.05, self.instance.exit.fire)
            return 1
        return call


@implementer(IVMInstance)
class FakeInstance:
    def __init__(self, vma: FakeVMA, dies: bool):
        self.pid = next(_pids)
        self.address = "127.0.0.1"
        self.ports = {"vma": vma.port.getHost().port, "x": 4999, "ssh": 0, "vnc": 0,
                      "serial": 0, "mon": 0}
        self.signals: list[str] = []
        self.exit = Once()
        self.dies = dies
        vma.instance = self

    def when_exited(self) -> defer.Deferred:
        return self.exit.wait()

    def signal(self, name: str) -> None:
        self.signals.append(name)
        if self.dies:
            reactor.callLater(0.05, self.exit.fire)


@implementer(IHypervisor)
class FakeHypervisor:
    name = "fake"

    def __init__(self) -> None:
        self.vmas: dict[int, FakeVMA] = {}
        self.instances: dict[int, FakeInstance] = {}
        self.dies = True

    def launch(self, spec: VMSpec) -> defer.Deferred:
        self.instances[spec.vm_id] = FakeInstance(self.vmas[spec.vm_id], self.dies)
        return defer.succeed(self.instances[spec.vm_id])

    def adopt(self, vm_id: int) -> defer.Deferred:
        return defer.succeed(None)

    def release(self, vm_id: int) -> defer.Deferred:
        return defer.succeed(None)

    def reap_strays(self, keep: set[int]) -> defer.Deferred:
        return defer.succeed([])


class HandlerTestCase(HKDTestCase):
    """A context on the test QVD-DB with the fake backend; ``extra`` adds node.conf lines."""

    extra = ""

    @inlineCallbacks
    def setUp(self):
        super().setUp()
        self.qa("host new name=test-node,address=127.0.0.1")
        self.host_id = self.db.query("SELECT id FROM hosts")[0][0]
        config = self.db.config(self.node_extra(self.root) + FAKE_TIMERS + self.extra)
        self.database = yield Database(config, "hkd-test").start()
        self.addCleanup(self.database.close)
        self.hypervisor = FakeHypervisor()
        self.ctx = HKDContext(config, self.database, reactor, self.host_id, self.hypervisor)
        self.addCleanup(self.ctx.close)

    def handler(self, name: str, answering: bool = True) -> VMHandler:
        """A handler for a new VM whose ``start`` was just claimed."""
        vm_id = self.new_vm(name)
        vma = self.hypervisor.vmas[vm_id] = FakeVMA()
        vma.answering = answering
        self.addCleanup(vma.port.stopListening)
        self.db.query("UPDATE vm_runtimes SET host_id = %s, vm_state = 'starting'"
                      " WHERE vm_id = %s", (self.host_id, vm_id))
        handler = VMHandler(self.ctx, vm_id)
        self.addCleanup(self._give_up, handler)
        return handler

    @staticmethod
    def _give_up(handler: VMHandler) -> defer.Deferred:
        handler.post("hkd_kill")
        return handler.when_finished()

    def counters(self, vm_id: int) -> tuple:
        return self.db.query("SELECT run_attempts, run_ok FROM vm_counters WHERE vm_id = %s",
                             (vm_id,))[0]


class VMHandlerTests(HandlerTestCase):
    @inlineCallbacks
    def test_a_stop_during_setup_waits_then_powers_off(self):
        handler = self.handler("v1")
        handler.start()
        handler.post("stop")  # arrives during the DB phase: delayed, not lost
        yield handler.when_finished()
        vma = self.hypervisor.vmas[handler.vm_id]
        self.assertIn("poweroff", vma.calls)
        self.assertEqual(self.hypervisor.instances[handler.vm_id].signals, [])
        self.assertEqual(self.vm_row(handler.vm_id)["vm_state"], "stopped")
        self.assertEqual(self.counters(handler.vm_id), (1, 0))

    @inlineCallbacks
    def test_poweroff_refused_means_term(self):
        handler = self.handler("v1")
        handler.start()
        yield self.wait_vm(handler.vm_id, "running")
        self.hypervisor.vmas[handler.vm_id].answering = False
        handler.post("stop")
        yield handler.when_finished()
        self.assertEqual(self.hypervisor.instances[handler.vm_id].signals, ["TERM"])
        self.assertEqual(self.counters(handler.vm_id), (1, 1))

    @inlineCallbacks
    def test_a_vm_that_will_not_die_is_a_zombie_until_the_hkd_gives_up(self):
        self.hypervisor.dies = False
        handler = self.handler("v1")
        handler.start()
        yield self.wait_vm(handler.vm_id, "running")
        handler.post("hkd_kill")
        yield self.wait_vm(handler.vm_id, "zombie")
        instance = self.hypervisor.instances[handler.vm_id]
        yield self.poll(lambda: instance.signals.count("KILL"), lambda n: n >= 2, 10, "reaping")
        self.assertEqual(instance.signals[:2], ["TERM", "KILL"])
        self.assertFalse(handler.finished)
        handler.post("hkd_kill")
        yield handler.when_finished()
        self.assertEqual(self.vm_row(handler.vm_id)["vm_state"], "zombie")

    @inlineCallbacks
    def test_max_heavy_serialises_setups(self):
        self.ctx.heavy.resize(1)
        first, second = self.handler("v1", answering=False), self.handler("v2")
        first.start()
        yield self.poll(lambda: first.vm_id in self.hypervisor.instances, bool, 10, "launch")
        second.start()
        yield self.poll(lambda: self.vm_row(first.vm_id)["vm_pid"], bool, 10, "first saved")
        self.assertNotIn(second.vm_id, self.hypervisor.instances, "waits for the heavy slot")
        self.hypervisor.vmas[first.vm_id].answering = True
        yield self.wait_vm(first.vm_id, "running")
        yield self.wait_vm(second.vm_id, "running")


class DebuggingTests(HandlerTestCase):
    extra = "internal.vm.debug.enable = 1\n"

    @inlineCallbacks
    def test_a_silent_vma_means_debugging_not_death(self):
        handler = self.handler("v1")
        handler.start()
        yield self.wait_vm(handler.vm_id, "running")
        vma = self.hypervisor.vmas[handler.vm_id]
        vma.answering = False
        yield self.wait_vm(handler.vm_id, "debugging")
        self.assertEqual(self.hypervisor.instances[handler.vm_id].signals, [])
        vma.answering = True
        yield self.wait_vm(handler.vm_id, "running")
        self.assertEqual(self.counters(handler.vm_id), (1, 1))
