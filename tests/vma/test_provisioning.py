"""Provisioning with the real groupadd/useradd/userdel (root only), hooks and rollback.

Each test creates a uniquely named account and removes it at cleanup.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import subprocess

import psutil

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qvd.vma.hooks import HookFailed, Hooks
from qvd.vma.provisioning import Provisioner, ProvisioningError
from tests.support.paths import scratch_dir
from tests.support.vma import hook_argv, make_settings, start_vma, write_hook
from tests.support.waiting import poll

ROOT = os.geteuid() == 0


def _gone(lookup, name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return True
    return False


class ProvisioningTests(unittest.TestCase):
    timeout = 60
    skip = None if ROOT else "provisioning creates accounts: needs root"

    def provisioner(self, **hooks: int) -> Provisioner:
        self.directory = scratch_dir(self)
        self.user = f"qvdt{random.randint(0, 10**8)}"
        self.addCleanup(self.remove_account)
        settings = make_settings(
            self.directory,
            **{"vma.user.provisioning": "1"},
            **{
                f"vma.on_provisioning.{name}": write_hook(self.directory, name, code)
                for name, code in hooks.items()
            },
        )
        os.makedirs(settings.log_dir)
        self.settings = settings
        self.provisioning_reported = []
        return Provisioner(reactor, settings, Hooks(reactor, settings))

    def remove_account(self) -> None:
        if not _gone(pwd.getpwnam, self.user):
            subprocess.run(["userdel", "-rf", self.user], capture_output=True)
        if not _gone(grp.getgrnam, self.user):
            subprocess.run(["groupdel", self.user], capture_output=True)

    def params(self, **extra: str) -> dict:
        params = {
            "qvd.vm.user.name": self.user,
            "qvd.vm.user.groups": "",
            "qvd.vm.user.home": f"{self.directory}/homes/{self.user}",
            **extra,
        }
        return params

    def account(self, provisioner: Provisioner, params: dict):
        provisioner.apply_defaults(params)
        return provisioner.account(params, lambda: self.provisioning_reported.append(1))

    @inlineCallbacks
    def test_useradd_then_after_add_user_hook(self):
        provisioner = self.provisioner(after_add_user=0, mount_home=0)
        os.makedirs(f"{self.directory}/homes")
        uid = str(random.randint(40000, 50000))
        account = yield self.account(provisioner, self.params(**{"qvd.vm.user.uid": uid}))
        entry = pwd.getpwnam(self.user)
        self.assertEqual((account.name, account.uid, account.gid), (self.user, int(uid), entry.pw_gid))
        self.assertEqual(grp.getgrgid(entry.pw_gid).gr_name, self.user)
        self.assertEqual(entry.pw_dir, account.home)
        self.assertEqual(os.stat(account.home).st_uid, int(uid))
        self.assertEqual(entry.pw_shell, "/bin/bash")
        self.assertTrue(self.provisioning_reported)
        argv = hook_argv(self.directory, "after_add_user")
        self.assertEqual(argv[-2:], ["qvd.hook.on_provisioning", "after_add_user"])
        self.assertIn(self.user, argv)
        self.assertEqual(hook_argv(self.directory, "mount_home")[-1], "mount_home")

        # a second session finds everything in place: nothing is provisioned again
        self.provisioning_reported.clear()
        again = yield self.account(provisioner, self.params())
        self.assertEqual(again, account)
        self.assertEqual(self.provisioning_reported, [])

    @inlineCallbacks
    def test_failing_after_add_user_rolls_back(self):
        provisioner = self.provisioner(after_add_user=1)
        yield self.assertFailure(self.account(provisioner, self.params()), HookFailed)
        self.assertTrue(_gone(pwd.getpwnam, self.user))
        self.assertTrue(_gone(grp.getgrnam, self.user))

    @inlineCallbacks
    def test_add_user_hook_replaces_useradd(self):
        provisioner = self.provisioner(add_user=0, after_add_user=0)
        error = yield self.assertFailure(self.account(provisioner, self.params()), ProvisioningError)
        self.assertEqual(str(error), f"user {self.user} was not created\n")
        self.assertEqual(hook_argv(self.directory, "add_user")[-2:], ["qvd.hook.on_provisioning", "add_user"])
        self.assertTrue(_gone(pwd.getpwnam, self.user))

    @inlineCallbacks
    def test_useradd_failure(self):
        provisioner = self.provisioner(after_add_user=0)
        params = self.params(**{"qvd.vm.user.groups": "nosuchgroup-qvd"})
        error = yield self.assertFailure(self.account(provisioner, params), ProvisioningError)
        self.assertIn("useradd", str(error))
        self.assertIsNone(hook_argv(self.directory, "after_add_user"))
        self.assertTrue(_gone(grp.getgrnam, self.user))

    def test_option_like_names_are_refused(self):
        provisioner = self.provisioner()
        for key, value in (
            ("qvd.vm.user.name", "-o"),
            ("qvd.vm.user.uid", "0 -o"),
            ("qvd.vm.user.group", "--help"),
            ("qvd.vm.user.groups", "sudo,-x"),
            ("qvd.vm.user.home", "/home/../etc"),
            ("qvd.vm.user.home", "relative"),
        ):
            d = self.account(provisioner, self.params(**{key: value}))
            self.assertEqual(str(self.failureResultOf(d, ProvisioningError).value), f"invalid value for {key}\n")
        self.assertTrue(_gone(pwd.getpwnam, self.user))


class SharedAccountTests(unittest.TestCase):
    """vma.user.provisioning = 0 (the process hypervisor): accounts are never touched."""

    def provisioner(self, account: str) -> Provisioner:
        settings = make_settings(
            scratch_dir(self), **{"vma.user.provisioning": "0", "vma.user.account": account}
        )
        return Provisioner(reactor, settings, Hooks(reactor, settings))

    def test_shared_account_overrides_the_callers_user(self):
        if not ROOT:
            raise unittest.SkipTest("needs root to run sessions as another account")
        provisioner = self.provisioner("nobody")
        params = {"qvd.vm.user.name": "alice", "qvd.vm.user.home": "/home/alice"}
        provisioner.apply_defaults(params)
        self.assertEqual(params["qvd.vm.user.name"], "nobody")
        account = self.successResultOf(provisioner.account(params, lambda: self.fail("provisioning")))
        self.assertEqual(account.uid, pwd.getpwnam("nobody").pw_uid)
        self.assertEqual(os.stat(account.home).st_uid, account.uid)
        self.assertTrue(_gone(pwd.getpwnam, "alice"))

    def test_root_is_refused(self):
        provisioner = self.provisioner("root")
        self.assertRaises(ProvisioningError, provisioner.apply_defaults, {})


class ProvisionedSessionTests(unittest.TestCase):
    """A root VMA with provisioning runs the session as the user it created."""

    timeout = 60
    skip = None if ROOT else "provisioning creates accounts: needs root"

    @inlineCallbacks
    def test_session_runs_as_the_provisioned_user(self):
        directory = scratch_dir(self)
        user = f"qvdt{random.randint(0, 10**8)}"
        self.addCleanup(subprocess.run, ["userdel", "-rf", user], capture_output=True)
        self.addCleanup(subprocess.run, ["groupdel", user], capture_output=True)
        settings = make_settings(
            directory,
            **{
                "vma.user.provisioning": "1",
                "vma.user.home.path": f"{directory}/homes",
                "command.timedatectl": write_hook(directory, "timedatectl"),
            },
        )
        os.makedirs(f"{directory}/homes")
        service, rpc = start_vma(self, settings)
        params = [
            ("qvd.vm.user.name", user),
            ("qvd.vm.user.groups", ""),
            ("qvd.client.timezone", "Europe/Madrid"),
        ]
        self.assertEqual((yield rpc.call("x_start", params)), "starting")
        yield poll(lambda: rpc.call("x_state"), lambda s: s == "listening")
        self.assertEqual(hook_argv(directory, "timedatectl"), ["set-timezone", "Europe/Madrid"])
        nxagent = psutil.Process(service.session.files.read_pid())
        self.assertEqual(nxagent.uids().real, pwd.getpwnam(user).pw_uid)
        self.assertEqual(nxagent.cwd(), f"{directory}/homes/{user}")
        self.assertEqual(nxagent.environ()["HOME"], f"{directory}/homes/{user}")
        self.assertEqual((yield rpc.call("x_stop")), "stopping")
        yield poll(lambda: rpc.call("x_state"), lambda s: s == "stopped")
