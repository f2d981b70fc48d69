"""Every provider of one of our seams implements its whole interface (as Twisted and
Buildbot check theirs): auth plugins, load balancers, hypervisors, request handlers."""

from __future__ import annotations

import os
import socket

import psutil
from twisted.internet import interfaces, task
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import IPlugin, getPlugins
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.config import Config, parse_properties
from qvd.http.server import IRequestHandler
from qvd.http.simplerpc import SimpleRPCHandler
from qvd.hkd.hypervisor import IHypervisor, IVMInstance
from qvd.hkd.process import ProcessHypervisor, Record, _AdoptedVM
from qvd.l7r.auth import AuthServices, IAuthPlugin, IAuthPluginFactory
from qvd.l7r.handler import L7RContext, L7RHandler
from qvd.l7r.tls import server_context
from qvd.loadbalancer import ILoadBalancer
from qvd.stream.splice import SpliceEnd
from qvd.stream.transport import StreamPort, TCPTransport, TLSTransport
from tests.support.l7r import self_signed, tls_conf
from tests.support.paths import scratch_dir


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

    def test_the_l7r_transports_and_port(self) -> None:
        """Our transports stand in for Twisted's: transport, producer, consumer, descriptor
        (the TLS one is not half-closeable: it never half-closes TCP under TLS)."""
        reactor = MemoryReactorClock()
        cert, key = self_signed(scratch_dir(self))
        context = server_context(Config(parse_properties(tls_conf(cert, key))))
        common = (interfaces.ITCPTransport, interfaces.IConsumer, interfaces.IPushProducer,
                  interfaces.IReadWriteDescriptor, interfaces.ISystemHandle)
        one, other = socket.socketpair()
        self.addCleanup(other.close)
        plain = TCPTransport(one, SpliceEnd(), reactor)
        self.addCleanup(one.close)
        for interface in common + (interfaces.IHalfCloseableDescriptor,):
            self.assertTrue(verifyObject(interface, plain), interface)
        mine, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        tls = TLSTransport(context.wrap_socket(mine, server_side=True,
                                               do_handshake_on_connect=False),
                           SpliceEnd(), reactor)
        self.addCleanup(tls.socket.close)
        for interface in common:
            self.assertTrue(verifyObject(interface, tls), interface)
        self.assertFalse(interfaces.IHalfCloseableDescriptor.providedBy(tls))
        port = StreamPort(socket.socket(), Factory.forProtocol(SpliceEnd), reactor, context)
        self.addCleanup(port.socket.close)
        self.assertTrue(verifyObject(interfaces.IListeningPort, port))
        self.assertTrue(verifyObject(interfaces.IReadDescriptor, port))
