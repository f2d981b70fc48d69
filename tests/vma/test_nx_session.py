"""Real sessions: the VMA drives Debian's nxagent; nxproxy and Xvfb play the client.

An X client (xclock) is the session command; the client side is an Xvfb
display with ``nxproxy -S`` attached to the VMA's NX port (reference §5.4).
"""

from __future__ import annotations

import os
import pwd

import psutil
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutput
from twisted.trial import unittest

from qvd.http.simplerpc import RPCError
from tests.support.hkd import pid_gone
from tests.support.paths import scratch_dir
from tests.support.vma import SESSION_ACCOUNT, hook_argv, make_settings, start_vma, write_hook
from tests.support.waiting import poll
from tests.support.x11 import start_nxproxy, start_xvfb

ACTIONS = ("pre-connect", "connect", "suspend", "stop")
STATES = ("connected", "suspended", "disconnected")
CLIENT_PARAMS = [
    ("qvd.client.os", "linux"),
    ("qvd.client.geometry", "800x600"),
    ("qvd.client.link", "lan"),
    ("qvd.client.keyboard", "pc105/us"),
    ("qvd.client.fullscreen", ""),
    ("custom.colour", "blue green"),
    ("qvd.slave.key", "k3y"),
    ("qvd.client.timezone", "Europe/Madrid"),
]


def xwininfo(display: str) -> "Deferred[str]":
    d = getProcessOutput("/usr/bin/xwininfo", ["-root", "-tree"], env={"DISPLAY": display})
    return d.addCallback(lambda out: out.decode())


class SessionTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.directory = scratch_dir(self)
        hooks = {f"vma.on_action.{a}": write_hook(self.directory, a) for a in ACTIONS}
        hooks.update({f"vma.on_state.{s}": write_hook(self.directory, s) for s in STATES})
        hooks["command.timedatectl"] = write_hook(self.directory, "timedatectl")
        self.settings = make_settings(self.directory, **hooks)
        self.service, self.rpc = start_vma(self, self.settings)

    def state(self):
        return self.rpc.call("x_state")

    def wait_state(self, wanted: str):
        return poll(self.state, lambda s: s == wanted)

    def wait_hook(self, name: str):
        return poll(lambda: succeed(hook_argv(self.directory, name)), lambda argv: argv is not None)

    def session_client_pid(self) -> int:
        xinit = psutil.Process(self.service.session._xinit.transport.pid)
        (xclock,) = [p for p in xinit.children() if p.name() == "xclock"]
        return xclock.pid

    @inlineCallbacks
    def attach(self, x_display: str):
        proxy = start_nxproxy(self, x_display, self.settings.display)
        yield self.wait_state("connected")
        return proxy

    @inlineCallbacks
    def test_start_connect_suspend_resume_stop(self):
        x_display = yield start_xvfb(self)
        self.assertEqual((yield self.state()), "stopped")

        self.assertEqual((yield self.rpc.call("x_start", CLIENT_PARAMS)), "starting")
        seen = [(yield self.state())]
        seen.append((yield poll(self.state, lambda s: s != "starting")))
        self.assertEqual(seen, ["starting", "listening"])
        with open(self.settings.options_path) as f:
            self.assertEqual(
                f.read(),
                "nx/nx,keyboard=pc105/us,client=linux,link=lan,geometry=800x600,"
                f"loopback=1,tolerancechecks=risky:{self.settings.display}\n",
            )
        with open(self.settings.slave_config_path) as f:
            self.assertEqual(f.read(), "k3y")
        self.assertIsNone(hook_argv(self.directory, "timedatectl"))  # the node's zone stays

        proxy = yield self.attach(x_display)
        # "connected" comes before the windows are mapped: wait for them (bounded)
        yield poll(lambda: xwininfo(x_display), lambda tree: '"QVD": ("NXAgent" "NXAgent")' in tree)
        yield poll(lambda: xwininfo(f":{self.settings.display}"), lambda tree: '"xclock"' in tree)
        xclock = self.session_client_pid()
        self.assertEqual((yield self.wait_hook("connected")), ["qvd.hook.on_state", "connected"])

        yield proxy.stop()
        yield self.wait_state("suspended")
        self.assertEqual((yield self.wait_hook("suspended")), ["qvd.hook.on_state", "suspended"])

        resume = [("qvd.client.geometry", "1024x768"), ("qvd.client.link", "adsl")]
        self.assertEqual((yield self.rpc.call("x_start", resume)), "starting")
        yield self.wait_state("listening")
        with open(self.settings.options_path) as f:
            self.assertIn("link=adsl,geometry=1024x768", f.read())
        yield self.attach(x_display)
        self.assertEqual(self.session_client_pid(), xclock)
        self.assertTrue(psutil.pid_exists(xclock))

        self.assertEqual((yield self.rpc.call("x_stop")), "stopping")
        yield self.wait_state("stopped")
        yield poll(lambda: succeed(pid_gone(xclock)), bool)  # X clients die with their server
        self.assertFalse(os.path.exists(self.settings.state_path))
        self.assertFalse(os.path.exists(self.settings.pid_path))
        self.assertEqual((yield self.wait_hook("disconnected")), ["qvd.hook.on_state", "stopped"])

        user = SESSION_ACCOUNT or pwd.getpwuid(os.geteuid()).pw_name
        session_params = [
            "qvd.client.geometry", "1024x768",
            "qvd.client.link", "adsl",
            "qvd.vm.user.name", user,
            "qvd.vm.user.home", os.path.join(self.directory, "home"),
        ]  # fmt: skip
        self.assertEqual(
            hook_argv(self.directory, "pre-connect"),
            session_params + ["qvd.vm.session.state", "suspended", "qvd.hook.on_action", "pre_connect"],
        )
        self.assertEqual(
            hook_argv(self.directory, "connect"),
            session_params + ["qvd.vm.session.state", "starting", "qvd.hook.on_action", "connect"],
        )
        self.assertEqual(
            hook_argv(self.directory, "stop"),
            ["qvd.vm.session.state", "connected", "qvd.hook.on_action", "stop"],
        )
        with open(self.settings.hooks_log) as f:
            self.assertIn("pre-connect.sh qvd.client.geometry 1024x768", f.read())

    @inlineCallbacks
    def test_connected_session_is_suspended_by_a_second_start(self):
        """How the L7R takes over a session (reference §2.4 step 14)."""
        x_display = yield start_xvfb(self)
        yield self.rpc.call("x_start", CLIENT_PARAMS)
        yield self.wait_state("listening")
        yield self.attach(x_display)
        error = yield self.assertFailure(self.rpc.call("x_start", CLIENT_PARAMS), RPCError)
        self.assertEqual(
            str(error), "Can't connect to X session in state connected, suspending it, retry later\n"
        )
        yield self.wait_state("suspended")
        self.assertEqual((yield self.rpc.call("x_start", CLIENT_PARAMS)), "starting")
        yield self.wait_state("listening")

    @inlineCallbacks
    def test_listening_times_out(self):
        """No proxy within internal.nxagent.timeout.listening: nxagent is terminated."""
        # the state file keeps whole seconds, so this fires 1-2 s into listening
        settings = make_settings(scratch_dir(self), **{"internal.nxagent.timeout.listening": "2"})
        service, rpc = start_vma(self, settings)
        yield rpc.call("x_start", CLIENT_PARAMS)
        yield poll(lambda: rpc.call("x_state"), lambda s: s == "listening")
        yield deferLater(reactor, 2.1, lambda: None)
        self.assertEqual((yield rpc.call("x_state")), "stopping")
        yield poll(lambda: rpc.call("x_state"), lambda s: s == "stopped")


class SideBySideTests(unittest.TestCase):
    """Two VMAs on one machine, as the process hypervisor runs them."""

    timeout = 120

    @inlineCallbacks
    def test_two_vmas_do_not_interfere(self):
        vmas = []
        for _ in range(2):
            directory = scratch_dir(self)
            settings = make_settings(directory, **{"internal.nxagent.timeout.listening": "60"})
            vmas.append(start_vma(self, settings))
        (a, rpc_a), (b, rpc_b) = vmas
        self.assertNotEqual(a.settings.display, b.settings.display)
        self.assertNotEqual(a.port.getHost().port, b.port.getHost().port)

        yield gatherResults([rpc.call("x_start", CLIENT_PARAMS) for _, rpc in vmas])
        for _, rpc in vmas:
            yield poll(lambda: rpc.call("x_state"), lambda s: s == "listening")
        x_display = yield start_xvfb(self)
        start_nxproxy(self, x_display, a.settings.display)
        yield poll(lambda: rpc_a.call("x_state"), lambda s: s == "connected")
        self.assertEqual((yield rpc_b.call("x_state")), "listening")

        self.assertEqual((yield rpc_a.call("x_stop")), "stopping")
        yield poll(lambda: rpc_a.call("x_state"), lambda s: s == "stopped")
        self.assertEqual((yield rpc_b.call("x_state")), "listening")
        self.assertTrue(os.path.exists(b.settings.state_path))
        start_nxproxy(self, x_display, b.settings.display)
        yield poll(lambda: rpc_b.call("x_state"), lambda s: s == "connected")
