"""``twistd -n qvd-vma --config vma.conf``, as an administrator starts it."""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qvd.http.simplerpc import SimpleRPCClient
from qvd.stream.sockets import free_port
from tests.support.paths import ROOT, scratch_dir
from tests.support.processes import Child
from tests.support.vma import free_display
from tests.support.waiting import poll

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class TwistdTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_plugin_serves_rpc_and_stops_cleanly(self):
        directory = scratch_dir(self)
        port = free_port()
        config = os.path.join(directory, "vma.conf")
        with open(config, "w") as f:
            f.write(
                f"path.run = {directory}/run\n"
                f"path.log = {directory}/log\n"
                f"internal.vm.port.vma = {port}\n"
                f"internal.nxagent.display = {free_display()}\n"
                "vma.address = 127.0.0.1\n"
            )
        argv = [TWISTD, "-n", "--pidfile=", "qvd-vma", "--config", config]
        vma = Child(self, argv, dict(os.environ, PYTHONPATH=ROOT))
        rpc = SimpleRPCClient(reactor, "127.0.0.1", port, timeout=2)

        def ping():
            return rpc.call("ping").addErrback(lambda failure: None)

        self.assertEqual((yield poll(ping, lambda result: result is not None)), 1)
        self.assertEqual((yield rpc.call("x_state")), "stopped")
        vma.process.signalProcess(signal.SIGTERM)
        yield vma.protocol.ended
        self.assertIn(b"VMA listening on port", vma.protocol.output)
        self.assertIn(b"Server Shut Down.", vma.protocol.output)
        self.assertNotIn(b"Traceback", vma.protocol.output)
