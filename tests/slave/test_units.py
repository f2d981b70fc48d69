"""The slave channel's building blocks: routing and the key, the hand-off of channels
over a UNIX socket, and the bridge between a stream and a program."""

from __future__ import annotations

import os
import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.http.head import Headers
from qvd.http.server import IRequestHandler, Request, Response
from qvd.slave import handoff
from qvd.slave.bridge import ProcessBridge, Program, run_program
from qvd.slave.routes import Route, SlaveHandler, inside, share_name, upgrade
from tests.support import waiting


def request(method: str, target: str, *headers: tuple[str, str]) -> Request:
    return Request(method, target, Headers(list(headers)))


class RoutesTests(unittest.TestCase):
    def setUp(self):
        self.calls = []
        self.key = "k3y"
        self.handler = SlaveHandler([
            Route("GET", "/ping", lambda r, rest: Response(200, b"Pong!\n"), auth=False),
            Route("PUT", "/shares/", lambda r, rest: self.calls.append(rest) or Response(204)),
        ], lambda: self.key)

    def test_provides_the_request_handler_interface(self):
        self.assertTrue(verifyObject(IRequestHandler, self.handler))

    def test_the_raw_key_not_base64(self):
        self.assertEqual(self.handler.handle(request("GET", "/ping")).status, 200)
        missing = self.handler.handle(request("PUT", "/shares/x"))
        self.assertEqual((missing.status, missing.headers),
                         (401, [("WWW-Authenticate", 'Basic realm="QVD"')]))
        for value in ("Basic azN5", "Bearer k3y", "Basic k3yy", "k3y"):
            self.assertEqual(self.handler.handle(
                request("PUT", "/shares/x", ("Authorization", value))).status, 403, value)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.handler.handle(
            request("PUT", "/shares/My%20Docs", ("Authorization", "Basic k3y"))).status, 204)
        self.assertEqual(self.calls, ["My Docs"])

    def test_no_key_yet_accepts_nothing(self):
        self.key = None
        self.assertEqual(self.handler.handle(
            request("PUT", "/shares/x", ("Authorization", "Basic "))).status, 403)

    def test_unknown_path_wrong_method_bad_encoding(self):
        self.assertEqual(self.handler.handle(request("GET", "/pong")).status, 404)
        self.assertEqual(self.handler.handle(request("POST", "/ping")).status, 405)
        self.assertEqual(self.handler.handle(request("GET", "/shares/%ff")).status, 400)

    def test_upgrade(self):
        good = request("PUT", "/", ("Connection", "upgrade"),
                       ("Upgrade", "qvd:sftp/1.0;charset=ISO-8859-1"))
        self.assertEqual(upgrade(good, "qvd:sftp/1.0"), (None, "ISO-8859-1"))
        for headers in ([("Upgrade", "qvd:sftp/1.0")],
                        [("Connection", "Upgrade"), ("Upgrade", "qvd:usbip/1.0")],
                        [("Connection", "Upgrade"), ("Upgrade", "qvd:sftp/1.0,evil")]):
            bad, _ = upgrade(request("PUT", "/", *headers), "qvd:sftp/1.0")
            self.assertEqual(bad.status, 400, headers)

    def test_names_and_paths(self):
        self.assertEqual(share_name("home/alice/Documents/"), "Documents")
        self.assertEqual(share_name(""), "ROOT")
        self.assertIsNone(share_name("home/.."))
        self.assertEqual(inside("/base", "a/./b"), "/base/a/b")
        self.assertIsNone(inside("/base", "a/../../etc/passwd"))


class _Collect(Protocol):
    def __init__(self):
        self.data = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(b"hello")
        self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.data += data

    def readConnectionLost(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.data)


class HandOffTests(unittest.TestCase):
    @inlineCallbacks
    def test_a_channel_handed_over_by_the_script_is_served(self):
        """The generated script passes its stdin; the listener serves it (here: echoes
        upper-cased through ``tr``, a ProcessBridge)."""
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path, script = os.path.join(directory, "s"), os.path.join(directory, "h")
        self.addCleanup(os.unlink, script)
        handoff.write_script(script, path, "a test")
        serve = Factory.forProtocol(
            lambda: ProcessBridge(reactor, Program(["/usr/bin/tr", "a-z", "A-Z"], {})))
        listener = handoff.HandOffListener(reactor, serve)
        listener.listen(path)
        self.addCleanup(listener.stop)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        code, output = yield run_program(reactor, Program([script], {}), stdin=theirs.fileno())
        theirs.close()
        self.assertEqual((code, output), (0, ""))
        peer = _Collect()
        ours.setblocking(False)
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX,
                                      Factory.forProtocol(lambda: peer))
        self.assertEqual((yield peer.done.addTimeout(10, reactor)), b"HELLO")

    def test_a_hand_off_connection_that_lingers_is_closed(self):
        clock = Clock()
        protocol = handoff.HandOffListener(clock, Factory()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        clock.advance(handoff.HANDOFF_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_what_is_not_a_stream_socket_is_refused(self):
        adopted = []
        listener = handoff.HandOffListener(reactor, Factory())
        self.patch(reactor, "adoptStreamConnection", lambda *a: adopted.append(a))
        r, w = os.pipe()
        os.close(w)
        listener.adopt(r)  # closes it
        self.assertRaises(OSError, os.close, r)
        one = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.adopt(os.dup(one.fileno()))
        one.close()
        self.assertEqual(adopted, [])
        self.flushLoggedErrors()


class BridgeTests(unittest.TestCase):
    @inlineCallbacks
    def test_both_ways_then_the_end_of_input_ends_the_program(self):
        ended = Deferred()
        bridge = ProcessBridge(reactor, Program(["/usr/bin/tr", "a-z", "A-Z"], {}),
                               ended.callback)
        transport = StringTransport()
        bridge.makeConnection(transport)
        bridge.dataReceived(b"shared ")
        bridge.dataReceived(b"folder")
        bridge.readConnectionLost()
        self.assertEqual((yield ended.addTimeout(10, reactor)), 0)
        self.assertEqual(transport.value(), b"SHARED FOLDER")
        self.assertTrue(transport.disconnecting)

    @inlineCallbacks
    def test_a_lost_connection_stops_the_program(self):
        ended = Deferred()
        bridge = ProcessBridge(reactor, Program(["/bin/sleep", "60"], {}), ended.callback)
        bridge.makeConnection(StringTransport())
        bridge.connectionLost()
        code = yield ended.addTimeout(10, reactor)
        self.assertNotEqual(code, 0)

    def test_a_program_that_cannot_start(self):
        ended = []
        transport = StringTransport()
        ProcessBridge(reactor, Program(["/nonexistent/sshfs"], {}), ended.append
                      ).makeConnection(transport)
        # the fork happened; the child failed to exec: it ends like any failing program
        return waiting.poll(lambda: ended, bool, 10, "the bridge's end")


class InterfaceTests(unittest.TestCase):
    def test_providers(self):
        from twisted.internet import interfaces

        from qvd.slave.bridge import _Output
        bridge = ProcessBridge(reactor, Program(["/bin/true"], {}))
        self.assertTrue(verifyObject(interfaces.IHalfCloseableProtocol, bridge))
        self.assertTrue(verifyObject(interfaces.IPushProducer, _Output(bridge)))
        self.assertTrue(verifyObject(interfaces.IFileDescriptorReceiver, handoff._HandOff()))
