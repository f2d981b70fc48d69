"""``qvd-client`` end to end: a real node, a real VM session, a desktop on a real X screen."""

from __future__ import annotations

import json
import os
import re
import subprocess

from twisted.internet.defer import inlineCallbacks

from tests.support.node import NodeTestCase
from tests.support.paths import ARTIFACTS
from tests.support.x11 import screenshot, start_xvfb, window
from tests.support.waiting import poll_blocking
from tests.support import waiting
from tests.support.x11 import start_nxproxy


class DesktopTests(NodeTestCase):
    @inlineCallbacks
    def see_xclock(self, display: str, *clients):
        """The VM's xclock as a window of ``display``, or a failure telling why not."""
        try:
            return (yield poll_blocking(lambda: window(display, "xclock"), bool, 60, "xclock window"))
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain(*clients)}") from None

    @inlineCallbacks
    def desktop(self, display: str, *args: str, **kwargs):
        """A ``qvd-client`` showing the VM's xclock on ``display``: (client, window region)."""
        client = self.client(*args, display=display, **kwargs)
        shown = yield self.shown(display, client)
        if shown is True:
            raise AssertionError(f"qvd-client exited{self.explain(client)}")
        return client, shown

    @inlineCallbacks
    def shown(self, display: str, client):
        """The xclock window's region, or True if the client exited first."""
        try:
            return (yield poll_blocking(lambda: client.ended.called or window(display, "xclock"),
                               bool, 60, "xclock window"))
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain(client)}") from None

    @inlineCallbacks
    def test_desktop_on_screen_then_suspend_and_resume(self):
        yield self.start_node()
        display = yield start_xvfb(self)
        first, region = yield self.desktop(display, "-o")
        self.assertIn("Session acquired for VM_ID", first.stderr)
        self.assertIn("Connection established", first.stderr)
        colours = screenshot(display, region, os.path.join(ARTIFACTS, "client-desktop.png"))
        self.assertGreater(len(colours - {"#000000"}), 0, f"xclock region is blank: {colours}")
        [xclock] = self.session_pids()
        self.assertEqual(self.runtime()["user_state"], "connected")

        first.transport.signalProcess("TERM")
        self.assertEqual((yield first.ended), 0, first.stderr)
        self.assertIn("session stays suspended", first.stderr)
        yield poll_blocking(lambda: self.runtime()["user_state"], lambda s: s == "disconnected", 20,
                   "user_state")
        # nxagent goes suspending -> suspended once it notices its link is gone
        yield waiting.poll(self.x_state, lambda s: s == "suspended", 20, "x_state")
        yield poll_blocking(lambda: window(display, "xclock"), lambda w: w is None, 20, "window gone")

        yield self.desktop(display, "-o")
        self.assertEqual(self.session_pids(), [xclock])
        yield waiting.poll(self.x_state, lambda s: s == "connected", 20, "x_state")

    @inlineCallbacks
    def test_a_second_client_takes_the_session_over(self):
        yield self.start_node()
        display = yield start_xvfb(self)
        first, _ = yield self.desktop(display, "--vm", "desk")
        [xclock] = self.session_pids()
        other_display = yield start_xvfb(self)
        self.assertEqual((first.ended.called, self.runtime()["user_state"]), (False, "connected"),
                         f"the first session ended on its own{self.explain(first)}")
        second, _ = yield self.desktop(other_display, "--vm", "desk")
        code = yield first.ended
        why = self.explain(first, second)
        self.assertEqual(code, 6, why)
        self.assertIn("another client has taken this virtual machine over", first.stderr, why)
        self.assertIn("Aborting contending session", second.stderr, why)
        self.assertEqual(self.session_pids(), [xclock])
        self.assertEqual(self.runtime()["user_state"], "connected", why)

    @inlineCallbacks
    def test_the_end_of_the_desktop_session_ends_the_client_then_stop_the_vm(self):
        yield self.start_node()
        display = yield start_xvfb(self)
        client, _ = yield self.desktop(display, "-o")
        [xclock] = self.session_pids()
        os.kill(xclock, 15)
        self.assertEqual((yield client.ended), 0, client.stderr)
        self.assertIn("The desktop session ended.", client.stderr)

        code, out, err = yield self.run_client("stop", "--vm", "desk")
        self.assertEqual(code, 0, err)
        self.assertIn("Stopping virtual machine", err)
        self.assertIn("Virtual machine desk stopped.", err)
        self.assertEqual(self.runtime()["vm_state"], "stopped")

    @inlineCallbacks
    def test_bearer_token_lists_and_connects(self):
        yield self.start_node()
        code, out, err = yield self.run_client("--create-token")
        self.assertEqual(code, 0, err)
        token = out.strip()
        self.assertRegex(token, r"^[A-Za-z0-9+/=]{40,}$")
        code, out, err = yield self.run_client("-l", "--json", "--token", token, user=None)
        self.assertEqual(code, 0, err)
        self.assertEqual([(vm["id"], vm["name"]) for vm in json.loads(out)],
                         [(self.vm_id, "desk")])
        display = yield start_xvfb(self)
        yield self.desktop(display, "--token", token, user=None)
        code, out, err = yield self.run_client("-l", "--token", "bm90LWEtdG9rZW4=", user=None)
        self.assertEqual(code, 3, err)
        self.assertIn("The authentication token is not valid", err)

    @inlineCallbacks
    def test_listen_serves_the_stream_to_any_nxproxy(self):
        yield self.start_node()
        display = yield start_xvfb(self)
        client = self.client("--listen", "0", "-g", "640x480", "--keyboard", "pc105/de")
        line = yield poll_blocking(lambda: re.search(r"served on 127.0.0.1:(\d+)", client.stderr), bool,
                          40, "listening port")
        start_nxproxy(self, display, int(line.group(1)) - 4000)
        yield self.see_xclock(display, client)
        with open(os.path.join(self.runtime_dir(), "nxagent.conf")) as f:
            options = f.read()
        self.assertIn("geometry=640x480", options)
        self.assertIn("keyboard=pc105/de", options)

    @inlineCallbacks
    def test_an_x_server_that_refuses_the_desktop(self):
        """Xvfb with a cookie and no way in for nxproxy (xhost does not help there)."""
        yield self.start_node()
        cookies = os.path.join(self.root, "Xauthority")
        subprocess.run(["xauth", "-f", cookies, "add", ":0", ".", "0" * 32], check=True)
        display = yield start_xvfb(self, "-auth", cookies)
        client = self.client("-o", display=display, env={"XAUTHORITY": cookies})
        self.assertEqual((yield client.ended), 1, client.stderr)
        self.assertIn(f"qvd-client: The X server {display} refused the desktop's windows",
                      client.stderr)
