"""QVD's C client (libqvdclient) against the L7R over real TLS, read record by record as
that client reads (tests/support/cclient.py): every ``connect_to_vm`` answer reaches it
while the connection is still open, also after a slow VM start, and a real session
reaches its ``101`` through the progress lines.

The C client takes an error as complete only after one more read than the head: an L7R
that writes an error's head and body in one TLS record leaves it waiting until the
connection is closed (``l7r.timeout.idle``, 120 s by default: 3 s here).  It also stops
watching its socket after 1 s without data, so the L7R repeats its progress line every
``l7r.progress.interval`` (0.5 s) while a connect waits."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from typing import Any, Generator

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.support import x11
from tests.support.cclient import Answer, connect_to_vm, relay
from tests.support.l7r import start_tls_fixture
from tests.support.paths import scratch_dir
from tests.support.vma import make_settings, start_vma
from tests.support.waiting import poll, poll_blocking
from tests.support.x11 import start_window_manager, start_xvfb

ALICE = "alice:s3cret"
LIMIT = 20.0  # seconds the model client waits before it counts as hung (the real one: 600)


class CClientTests(unittest.TestCase):
    """An in-process L7R with TLS on the fixture of protocols/l7r-http.md."""

    conf = ("l7r.timeout.idle = 3\n"  # today's answer-by-close comes this late
            "internal.l7r.timeout.vm_start = 4\n")
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.node, self.cert = yield start_tls_fixture(self, self.conf)

    def connect(self, vm_id: int, **kwargs: Any) -> defer.Deferred[Answer]:
        return threads.deferToThread(connect_to_vm, self.node.port, self.cert, vm_id, ALICE,
                                     LIMIT, **kwargs)

    def assertAnswer(self, answer: Answer, status: int, body: bytes) -> None:
        self.assertEqual((answer.outcome, answer.status, answer.body), ("error", status, body),
                         answer)
        self.assertFalse(answer.by_close, f"only complete when the L7R hung up: {answer}")

    @defer.inlineCallbacks
    def test_refusals_reach_it_while_the_connection_is_open(self) -> Generator[Any, Any, None]:
        """Unknown VM, another user's VM, a blocked VM, a blocked host: each error head and
        body are two records, so the client's second read completes the answer."""
        cases = [
            (424242, 404, b"The requested virtual machine does not exist"),
            (10002, 403, b"You are not allowed to access requested virtual machine"),
            (10003, 403, b"The requested virtual machine is offline for maintenance"),
        ]
        for vm_id, status, body in cases:
            self.assertAnswer((yield self.connect(vm_id)), status, body)
        self.node.qa("qa host name=test-node block")
        self.assertAnswer((yield self.connect(10000)), 503, b"Server is blocked")

    @defer.inlineCallbacks
    def test_an_error_after_a_slow_vm_start_reaches_it(self) -> Generator[Any, Any, None]:
        """No HKD starts the VM: 'Waiting for VM...' comes every ``poll_time.vm`` (2 s)
        until the start times out (4 s).  Without a line at least every second the
        client would have stopped reading long before the 503."""
        answer = yield self.connect(10000)
        self.assertAnswer(answer, 503, b"The requested virtual machine is not available:"
                          b" VM didn't reach state 'running'. Timeout, retry later.")
        self.assertIn("Waiting for VM to reach state 'running'", answer.progress)
        self.assertEqual(self.node.sql("SELECT user_state FROM vm_runtimes WHERE vm_id = 10000"),
                         [("disconnected",)])

    @defer.inlineCallbacks
    def test_a_real_session_reaches_its_101_and_nxagent_gets_the_size_asked_for(
            self) -> Generator[Any, Any, None]:
        """A real VMA and nxagent: the client's loop sees every step (the X session takes
        more than a second to come up) and its 101; the size in its request is the size
        of the desktop it gets on a 1280x800 screen.  (Without a window manager on the
        client's screen nxagent goes fullscreen whatever the size asked for, and its
        window is 3/4 of the screen: 960x600, what a C client user saw.)"""
        settings = make_settings(scratch_dir(self))
        vma, rpc = start_vma(self, settings)
        self.node.sql(
            "UPDATE vm_runtimes SET vm_state = 'running', host_id = %s,"
            " vm_address = '127.0.0.1', vm_vma_port = %s, vm_x_port = %s WHERE vm_id = 10000",
            (self.node.host_id, vma.port.getHost().port, settings.nx_port))
        display = yield start_xvfb(self, "-screen", "0", "1280x800x24")
        yield start_window_manager(self, display)
        answer = yield self.connect(10000, geometry="1024x768", keep=True)
        self.assertEqual(answer.outcome, "upgraded", answer)
        self.assertEqual([step for step in dict.fromkeys(answer.progress)], [
            "Session acquired for VM_ID: 10000",
            "Starting X session at VM 10000",
            "Waiting for X session to come up on VM 10000",
            "Connecting X session for VM_ID: 10000",
            "Connection established",
        ])
        with open(settings.options_path) as f:
            options = f.read()
        self.assertIn("keyboard=pc/105,client=linux,link=adsl,geometry=1024x768,", options)

        yield self.show(answer.stream, display)  # the client's nxcomp, played by nxproxy
        yield poll(lambda: rpc.call("x_state"), lambda state: state == "connected")
        window = yield poll_blocking(lambda: x11.window(display, "QVD"), bool, 30,
                                     "nxagent's window on the client's screen")
        self.assertEqual(window[2:], (1024, 768))
        screen = yield threads.deferToThread(
            subprocess.run, ["xdpyinfo", "-display", f":{settings.display}"],
            capture_output=True, text=True, timeout=30)
        self.assertIn("dimensions:    1024x768 pixels", screen.stdout)

    @defer.inlineCallbacks
    def show(self, stream: ssl.SSLSocket, display: str) -> Generator[Any, Any, None]:
        """Relay the upgraded stream to ``nxproxy -S`` on ``display`` (until cleanup)."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        while listener.getsockname()[1] <= 4000:  # nxproxy is told the port - 4000
            listener.close()
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(30)
        x11.start_nxproxy(self, display, listener.getsockname()[1] - 4000)
        local, _ = yield threads.deferToThread(listener.accept)
        stop = threading.Event()
        pump = threading.Thread(target=relay, args=(stream, local, stop), daemon=True)
        pump.start()
        self.addCleanup(pump.join, 10)
        self.addCleanup(stop.set)
