"""Action hooks with their documented argv, and failing synchronous hooks failing the RPC."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.trial import unittest

from qvd.http.simplerpc import RPCError
from qvd.vma.hooks import Hooks
from tests.support.paths import scratch_dir
from tests.support.vma import hook_argv, make_settings, start_vma, write_hook
from tests.support.waiting import poll


class HookTests(unittest.TestCase):
    timeout = 60

    def vma(self, **hooks: int):
        """A VMA whose hooks ``name=exit code`` record their argv in the scratch dir."""
        self.directory = scratch_dir(self)
        settings = make_settings(
            self.directory,
            **{
                f"vma.on_action.{name.replace('_', '-')}": write_hook(self.directory, name, code)
                for name, code in hooks.items()
            },
        )
        self.service, self.rpc = start_vma(self, settings)
        return settings

    def record_shutdowns(self) -> list:
        shutdowns: list = []
        self.patch(self.service.session, "shutdown", lambda: succeed(shutdowns.append(1)))
        return shutdowns

    @inlineCallbacks
    def test_pre_connect_failure_fails_x_start_and_starts_nothing(self):
        settings = self.vma(pre_connect=1)
        error = yield self.assertFailure(
            self.rpc.call("x_start", [("qvd.client.link", "lan")]), RPCError
        )
        self.assertEqual(str(error), "vma.on_action.pre-connect hook failed with exit code 1\n")
        argv = hook_argv(self.directory, "pre_connect")
        self.assertEqual(argv[:2], ["qvd.client.link", "lan"])
        self.assertEqual(argv[-4:], ["qvd.vm.session.state", "stopped", "qvd.hook.on_action", "pre_connect"])
        self.assertEqual((yield self.rpc.call("x_state")), "stopped")
        self.assertIsNone(self.service.session._xinit)
        self.assertFalse(os.path.exists(settings.nxagent_log))
        with open(settings.hooks_log) as f:
            self.assertIn("pre_connect.sh qvd.client.link lan", f.read())

    @inlineCallbacks
    def test_failing_suspend_and_stop_hooks_fail_the_rpc(self):
        self.vma(suspend=2, stop=3)
        yield self.rpc.call("x_start")
        yield poll(lambda: self.rpc.call("x_state"), lambda s: s == "listening")
        error = yield self.assertFailure(self.rpc.call("x_suspend"), RPCError)
        self.assertEqual(str(error), "vma.on_action.suspend hook failed with exit code 2\n")
        self.assertEqual(
            hook_argv(self.directory, "suspend"),
            ["qvd.vm.session.state", "listening", "qvd.hook.on_action", "suspend"],
        )
        error = yield self.assertFailure(self.rpc.call("x_stop"), RPCError)
        self.assertEqual(str(error), "vma.on_action.stop hook failed with exit code 3\n")
        self.assertEqual((yield self.rpc.call("x_state")), "listening")

    @inlineCallbacks
    def test_x_suspend_and_x_stop_without_session_run_no_hook(self):
        self.vma(suspend=0, stop=0)
        self.assertEqual((yield self.rpc.call("x_suspend")), "stopped")
        self.assertEqual((yield self.rpc.call("x_stop")), "stopped")
        self.assertIsNone(hook_argv(self.directory, "suspend"))
        self.assertIsNone(hook_argv(self.directory, "stop"))

    @inlineCallbacks
    def test_expire(self):
        self.vma(expire=0)
        params = [("vm.expiration.soft", "2026-11-21T12:00:00"), ("other", "x")]
        self.assertEqual((yield self.rpc.call("expire", params)), 1)
        self.assertEqual(
            hook_argv(self.directory, "expire"),
            [
                "vm.expiration.soft", "2026-11-21T12:00:00",
                "qvd.vm.session.state", "stopped",
                "qvd.hook.on_action", "expire",
            ],
        )  # fmt: skip

    @inlineCallbacks
    def test_expire_failure(self):
        self.vma(expire=4)
        error = yield self.assertFailure(self.rpc.call("expire"), RPCError)
        self.assertEqual(str(error), "vma.on_action.expire hook failed with exit code 4\n")

    @inlineCallbacks
    def test_poweroff_answers_then_ends_the_session(self):
        self.vma(poweroff=0)
        shutdowns = self.record_shutdowns()
        self.assertEqual((yield self.rpc.call("poweroff")), 1)
        self.assertEqual(
            hook_argv(self.directory, "poweroff"),
            ["qvd.vm.session.state", "stopped", "qvd.hook.on_action", "poweroff"],
        )
        yield poll(lambda: succeed(shutdowns), bool)

    @inlineCallbacks
    def test_poweroff_failure_does_not_power_off(self):
        self.vma(poweroff=5)
        shutdowns = self.record_shutdowns()
        error = yield self.assertFailure(self.rpc.call("poweroff"), RPCError)
        self.assertEqual(str(error), "vma.on_action.poweroff hook failed with exit code 5\n")
        yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(shutdowns, [])


class StateHookTests(unittest.TestCase):
    @inlineCallbacks
    def test_failing_state_hook_is_only_logged(self):
        directory = scratch_dir(self)
        settings = make_settings(
            directory, **{"vma.on_state.connected": write_hook(directory, "connected", 7)}
        )
        hooks = Hooks(reactor, settings)
        os.makedirs(settings.log_dir)
        self.assertIsNone(hooks.state("connected"))
        argv = yield poll(lambda: succeed(hook_argv(directory, "connected")), bool)
        self.assertEqual(argv, ["qvd.hook.on_state", "connected"])
