"""The VM side of the session's channels, piece by piece: the slave endpoints'
refusals (with real programs run as the session account), the files the VMA writes
for other slave servers and hooks, the session's environment, the sound set-up."""

from __future__ import annotations

import os
import pwd
import stat

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from qvd.http.head import Headers
from qvd.http.server import Request, SwitchProtocols
from qvd.vma import usbip
from qvd.vma.channels import SessionChannels
from qvd.vma.provisioning import SessionAccount
from qvd.vma.slave import SessionContext, VMSlaveEndpoints, fuse_usable, shares_dir
from tests.support.paths import scratch_dir
from tests.support.vma import SESSION_ACCOUNT, make_settings

SFTP = [("Connection", "Upgrade"), ("Upgrade", "qvd:sftp/1.0")]


def account(home: str) -> SessionAccount:
    """The suite's session account (nobody as root, else ourselves), as the VMA runs it."""
    if not SESSION_ACCOUNT:
        return SessionAccount(pwd.getpwuid(os.geteuid()).pw_name, home, None, None)
    entry = pwd.getpwnam(SESSION_ACCOUNT)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return SessionAccount(entry.pw_name, home, entry.pw_uid, entry.pw_gid)


class EndpointTests(unittest.TestCase):
    def setUp(self):
        directory = scratch_dir(self)
        self.home = os.path.join(directory, "home")
        os.makedirs(self.home)
        self.settings = make_settings(directory, **{"vma.slave.enable": "1",
                                                    "command.open_file": "/bin/true"})
        self.context = SessionContext(account(self.home), {"PATH": "/usr/bin:/bin",
                                                           "HOME": self.home})
        self.endpoints = VMSlaveEndpoints(reactor, self.settings, lambda: self.context)

    def handle(self, method: str, path: str, *headers: tuple[str, str]):
        route = {(r.method, r.prefix): r for r in self.endpoints.routes()}
        prefix = next(p for m, p in route if m == method and path.startswith(p))
        return route[method, prefix].handle(Request(method, path, Headers(list(headers))),
                                            path[len(prefix):])

    @inlineCallbacks
    def test_a_share_gets_a_fresh_mount_point_made_by_the_session_account(self):
        answer = yield self.handle("PUT", "/shares/home/alice/Documents", *SFTP)
        if not fuse_usable(self.context.account.uid, ()):
            self.assertEqual(answer.status, 503)
            return
        self.assertIsInstance(answer, SwitchProtocols)
        self.assertEqual(answer.headers, [("X-QVD-Share-Ticket", "Documents")])
        mount = os.path.join(self.home, "Redirected", "Documents")
        self.assertEqual(answer.protocol.program.argv[1:4], ["qvd-client:", mount, "-f"])
        self.assertEqual(os.listdir(mount), [])
        if self.context.account.uid is not None:
            self.assertEqual(os.stat(mount).st_uid, self.context.account.uid)

    @inlineCallbacks
    def test_a_busy_mount_point_is_a_conflict(self):
        os.makedirs(os.path.join(self.home, "Redirected", "Documents", "something"))
        answer = yield self.handle("PUT", "/shares/home/alice/Documents", *SFTP)
        if answer.status == 503:
            self.assertIn(b"/dev/fuse", answer.body)
            return
        self.assertEqual(answer.status, 409, answer.body)

    @inlineCallbacks
    def test_refusals(self):
        self.assertEqual((yield self.handle("PUT", "/shares/x")).status, 400)
        self.assertEqual((yield self.handle("GET", "/shares/no/such/dir", *SFTP)).status, 404)
        answer = yield self.handle("POST", "/open/file.txt")
        self.assertEqual(answer.status, 400)
        answer = yield self.handle("POST", "/open/../../etc/passwd",
                                   ("X-QVD-Share-Ticket", "Documents"))
        self.assertEqual(answer.status, 400)
        answer = yield self.handle("POST", "/open/missing.txt", ("X-QVD-Share-Ticket", "Docs"))
        self.assertEqual(answer.status, 404)
        self.context = None
        answer = yield self.handle("PUT", "/shares/x", *SFTP)
        self.assertEqual(answer.status, 503)

    @inlineCallbacks
    def test_a_vm_folder_for_the_client(self):
        answer = yield self.handle("GET", "/shares" + self.home, *SFTP)
        self.assertIsInstance(answer, SwitchProtocols)
        self.assertEqual(answer.protocol.program.path, self.home)
        self.assertEqual(answer.protocol.program.argv[1:], ["-e"])

    def test_usb_without_kernel_support(self):
        answer = self.handle("POST", "/usbip", ("Connection", "Upgrade"),
                             ("Upgrade", "qvd:usbip/1.0"))
        self.assertEqual(answer.status, 501)
        self.assertIn(b"modprobe vhci-hcd", answer.body)

    def test_usb_ports(self):
        status = ("hub port sta spd dev      sockfd local_busid\n"
                  "hs  0000 006 003 00010002 000003 1-1\n"
                  "hs  0001 004 000 00000000 000000 0-0\n"
                  "ss  0008 004 000 00000000 000000 0-0\n")
        self.assertEqual(usbip.free_port(status, 3), 1)
        self.assertEqual(usbip.free_port(status, 5), 8)
        self.assertIsNone(usbip.free_port(status.replace("004", "006"), 2))

    def test_fuse_for_an_unprivileged_account(self):
        device = os.path.join(self.home, "fuse")
        open(device, "w").close()
        os.chmod(device, 0o600)
        self.assertFalse(fuse_usable(65534, (65534,), device))
        os.chmod(device, 0o660)
        self.assertTrue(fuse_usable(65534, (os.stat(device).st_gid,), device))
        os.chmod(device, 0o666)
        self.assertTrue(fuse_usable(65534, (), device))

    def test_shares_path(self):
        self.assertEqual(shares_dir(self.settings, "/home/a"), "/home/a/Redirected")


class SessionChannelTests(unittest.TestCase):
    def setUp(self):
        directory = scratch_dir(self)
        self.home = os.path.join(directory, "home")
        os.makedirs(self.home)
        self.settings = make_settings(directory, **{
            "vma.slave.enable": "1", "vma.printing.enable": "1", "vma.audio.enable": "1"})
        os.makedirs(self.settings.run_dir)
        self.channels = SessionChannels(reactor, self.settings)

    def test_the_session_finds_its_channels(self):
        env = self.channels.environment()
        display = self.settings.display
        self.assertEqual(env["NX_SLAVE_CMD"], self.settings.slave_handoff)
        self.assertEqual(env["CUPS_SERVER"], f"127.0.0.1:{2000 + display}")
        self.assertEqual(env["PULSE_SERVER"], f"unix:{self.settings.run_dir}/pulse/native")
        own = make_settings(scratch_dir(self), **{"vma.slave.enable": "1",
                                                  "vma.slave.command": "/opt/qvd/slave"})
        self.assertEqual(SessionChannels(reactor, own).environment(),
                         {"NX_SLAVE_CMD": "/opt/qvd/slave", "QVD_SLAVE_CMD": "/opt/qvd/slave"})

    def test_slave_conf_is_the_session_accounts_only(self):
        self.channels.launched(account(self.home), {})
        self.channels.session_params({"qvd.slave.key": "K3Y", "qvd.client.os": "linux",
                                      "qvd.client.printing.enabled": "1"})
        st = os.stat(self.settings.slave_config_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        if SESSION_ACCOUNT:
            self.assertEqual(st.st_uid, pwd.getpwnam(SESSION_ACCOUNT).pw_uid)
        with open(self.settings.slave_config_path) as f:
            self.assertEqual(f.read(), "K3Y")
        self.assertEqual(self.channels.key, "K3Y")
        with open(self.settings.printing_config_path) as f:
            self.assertEqual(f.read().splitlines(), [
                "qvd.printing.enabled = 1", f"qvd.printing.port = {2000 + self.settings.display}",
                f"qvd.slave.port = {11000 + self.settings.display}", "qvd.client.os = linux"])

    def test_sound_starts_once_the_session_is_up(self):
        started = []
        self.patch(self.channels.audio, "start", lambda *a: started.append(a[0]))
        line = "Info: Listening to multimedia connections on port 'tcp:localhost:7345'."
        self.assertTrue(self.channels.output_line(line))
        self.assertEqual(started, [], "no session yet")
        self.channels.state_changed("started")
        self.assertEqual(started, [], "no session yet")
        self.channels.launched(account(self.home), {"HOME": self.home})
        self.assertTrue(self.channels.output_line(line))
        self.assertFalse(self.channels.output_line("Session: Session started at 'x'."))
        self.channels.state_changed("starting")
        self.assertEqual(started, [], "nxagent has no display yet")
        self.channels.state_changed("started")
        self.assertEqual(started, [7345])
        script = self.channels.audio.script(7345)
        self.assertIn("module-tunnel-sink-new server=tcp:127.0.0.1:7345", script)
        self.assertIn(f"socket={self.settings.run_dir}/pulse/native", script)
