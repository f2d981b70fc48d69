"""``qvd-client --pipe`` against a scripted L7R (the project's HTTP server, plain TCP).

The L7R side is scripted so the test can look at exactly what the client
sends, and can put bytes right behind the ``101`` head: they must be the
first bytes on the client's standard output.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.trial import unittest
from zope.interface import implementer

from qvd.http.server import (
    IRequestHandler, QVDHTTPServerFactory, Request, Response, SwitchProtocols,
)
from tests.support.node import spawn_client

VMS = [{"id": 7, "name": "seven", "state": "running", "blocked": 0, "is_application": 0}]


class Shouter(Protocol):
    """The "VM" end: greets at once, then answers every chunk in upper case."""

    def connectionMade(self) -> None:
        self.transport.write(b"early;")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())
        if b"\n" in data:
            self.transport.loseConnection()


@implementer(IRequestHandler)
class ScriptedL7R:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    def handle(self, request: Request) -> Any:
        self.requests.append(request)
        if request.path == "/qvd/list_of_vm":
            return Response(200, json.dumps(VMS).encode(), "application/json")
        # a step's line comes again while the L7R waits (l7r.progress.interval)
        for step in ("Starting virtual machine", "Starting virtual machine",
                     "Connection established"):
            request.channel.processing([("X-QVD-VM-Info", step)])
        return SwitchProtocols([("X-QVD-Slave-Key", "k" * 64)], Shouter())


class PipeTests(unittest.TestCase):
    timeout = 30

    @inlineCallbacks
    def test_pipe_carries_the_stream_from_the_first_byte(self):
        l7r = ScriptedL7R()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            QVDHTTPServerFactory(l7r, reactor))
        self.addCleanup(port.stopListening)
        home = tempfile.mkdtemp(prefix="qvd-client-pipe-")
        self.addCleanup(shutil.rmtree, home, True)
        conf = os.path.join(home, "client.conf")
        with open(conf, "w") as f:
            f.write(f"client.host.name = 127.0.0.1\nclient.host.port = {port.getHost().port}\n"
                    "client.use_ssl = 0\nclient.user.name = bob\nclient.geometry = 800x600\n"
                    "client.link = lan\nclient.keyboard = pc105/es\n")
        client = spawn_client(["--config", conf, "--pipe"], {"HOME": home, "QVDPASSWORD": "pw"})
        client.transport.write(b"ping\n")
        code = yield client.ended
        self.assertEqual(code, 0, client.stderr)
        self.assertEqual(client.out, b"early;PING\n")
        self.assertIn("Starting virtual machine\nConnection established\n", client.stderr)
        self.assertEqual(client.stderr.count("Starting virtual machine"), 1, "shown once")

        listing, connect = l7r.requests
        self.assertEqual(listing.path, "/qvd/list_of_vm")
        self.assertEqual(connect.path, "/qvd/connect_to_vm")
        self.assertIs(connect.channel, listing.channel, "one connection for the whole run")
        self.assertEqual(connect.headers.get("Authorization"),
                         "Basic " + base64.b64encode(b"bob:pw").decode())
        self.assertEqual((connect.headers.get("Connection"), connect.headers.get("Upgrade")),
                         ("Upgrade", "QVD/1.0"))
        self.assertEqual(dict(connect.query), {
            "id": "7", "qvd.client.os": "linux", "qvd.client.link": "lan",
            "qvd.client.fullscreen": "0", "qvd.client.printing.enabled": "1",
            "qvd.client.geometry": "800x600", "qvd.client.keyboard": "pc105/es"})
