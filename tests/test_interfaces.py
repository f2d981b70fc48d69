"""Every provider of one of our seams implements its whole interface (as Twisted and
Buildbot check theirs): auth plugins, load balancers, hypervisors, request handlers."""

from __future__ import annotations

import os

import psutil
from twisted.internet import interfaces, task
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.config import Config
from qvd.http.server import IRequestHandler
from qvd.http.simplerpc import SimpleRPCHandler
from qvd.hkd.hypervisor import IHypervisor, IVMInstance
from qvd.hkd.process import ProcessHypervisor, Record, _AdoptedVM
from qvd.l7r.auth import AuthServices, IAuthPlugin, IAuthPluginFactory
from qvd.l7r.handler import L7RContext, L7RHandler
from qvd.loadbalancer import ILoadBalancer
from qvd.stream.splice import SpliceEnd


class InterfaceTests(unittest.TestCase):
    def test_every_installed_auth_plugin(self) -> None:
        factories = list(getPlugins(IAuthPluginFactory))
        self.assertIn("default", {f.name for f in factories})
        services = AuthServices(Config({}), None, task.Clock())  # type: ignore[arg-type]
        for factory in factories:
            self.assertTrue(verifyObject(IPlugin, factory))
            self.assertTrue(verifyObject(IAuthPluginFactory, factory))
            self.assertTrue(verifyObject(IAuthPlugin, factory.make_plugin(services)), factory.name)

    def test_every_installed_load_balancer(self) -> None:
        plugins = list(getPlugins(ILoadBalancer))
        self.assertLessEqual({"default", "random"}, {p.name for p in plugins})
        for plugin in plugins:
            self.assertTrue(verifyObject(ILoadBalancer, plugin), plugin.name)

    def test_the_process_hypervisor_and_its_vms(self) -> None:
        reactor = MemoryReactorClock()
        self.assertTrue(verifyObject(IHypervisor, ProcessHypervisor(Config({}), reactor)))
        me = psutil.Process(os.getpid())
        record = Record(10000, me.pid, me.create_time(), "127.0.0.1", 3030, 600, "vma.conf")
        self.assertTrue(verifyObject(IVMInstance, _AdoptedVM(reactor, record, me, 1.0)))

    def test_request_handlers(self) -> None:
        self.assertTrue(verifyObject(IRequestHandler, SimpleRPCHandler({})))
        context = L7RContext(Config({}), None, None, None, "test-node", None)  # type: ignore
        self.assertTrue(verifyObject(IRequestHandler, L7RHandler(context)))

    def test_a_splice_end_is_a_half_closeable_push_producer(self) -> None:
        end = SpliceEnd()
        self.assertTrue(verifyObject(interfaces.IPushProducer, end))
        self.assertTrue(verifyObject(interfaces.IHalfCloseableProtocol, end))
