"""The user's machine in the desktop, end to end: a real node (process hypervisor),
``qvd-client`` with Debian's nxproxy, and the real programs on both sides: sshfs and
sftp-server (shared folders), cupsd with CUPS-PDF (printing), PulseAudio and sox
(sound)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile

import psutil
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from tests.support.node import NodeTestCase
from tests.support.x11 import start_xvfb, window
from tests.support.waiting import poll_blocking
from tests.support import desktop
from tests.support.cups import PDFPrinter
from tests.support.pulse import UserPulseAudio

CHANNELS = """\
vma.slave.enable = 1
vma.printing.enable = 1
vma.audio.enable = 1
"""
TONE_HZ = 880
# a page as desktop programs print them (PostScript; Ghostscript has the font)
DOCUMENT = b"""%!PS
/Helvetica findfont 24 scalefont setfont
72 720 moveto (Printed in the VM) show
showpage
"""


def slave_request(port: int, head: str, timeout: float = 20) -> tuple[int, str, str]:
    """One request on a slave channel: (status, head, body), blocking (run in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        text, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", text)
        while length and len(body) < int(length.group(1)):
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    head_text = text.decode("ascii", "replace")
    return int(head_text.split()[1]), head_text, body.decode("utf-8", "replace")


class ChannelTestCase(NodeTestCase):
    timeout = 120

    def setUp(self) -> None:
        super().setUp()
        with open(self.conf, "a") as f:
            f.write(CHANNELS + f"command.open_file = {self.opener('vm')}\n")
        desktop.fuse_for_sessions()
        self.addCleanup(desktop.unmount_all, self.root)

    def opener(self, side: str) -> str:
        """An open command that records what it was asked to open (``opened(side)``)."""
        path = os.path.join(self.root, f"open-{side}.sh")
        os.makedirs(os.path.join(self.root, "opened"), exist_ok=True)
        os.chmod(os.path.join(self.root, "opened"), 0o777)  # the VM's runs as its session user
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {self.opened(side)}\n')
        os.chmod(path, 0o755)
        return path

    def opened(self, side: str) -> str:
        return os.path.join(self.root, "opened", side)

    def slave_key(self) -> str:
        """The session's key, as the VMA keeps it for other slave servers (slave.conf)."""
        with open(os.path.join(self.runtime_dir(), "slave.conf")) as f:
            return f.read()

    def display(self) -> int:
        """The VM's X display (its nxagent options file ends in ``:<display>``)."""
        with open(os.path.join(self.runtime_dir(), "nxagent.conf")) as f:
            return int(f.read().strip().rsplit(":", 1)[1])

    def explain(self, *protocols) -> str:
        """Also the VMA's own log (the slave channel's requests and programs)."""
        text = super().explain(*protocols)
        vma_log = os.path.join(os.path.dirname(self.runtime_dir()), "vma.log")
        if os.path.exists(vma_log):
            with open(vma_log, errors="replace") as f:
                text += "\n--- VMA log\n" + "".join(f.readlines()[-30:])
        return text

    def vm_home(self) -> str:
        return os.path.join(self.root, "storage", "homes", str(self.vm_id))

    @inlineCallbacks
    def session(self, *args: str, env=None):
        """A qvd-client showing the desktop: (client, pid of a session process)."""
        display = yield start_xvfb(self)
        client = self.client("-o", *args, display=display, env=env)
        try:
            yield poll_blocking(lambda: client.ended.called or window(display, "xclock"), bool, 60,
                       "xclock window")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain(client)}") from None
        if client.ended.called:
            raise AssertionError(f"qvd-client exited{self.explain(client)}")
        [pid] = self.session_pids()
        return client, pid

    @inlineCallbacks
    def session_using(self, server, variable: str, *args: str):
        """``server`` (the client machine's CUPS or PulseAudio) started, then the node and
        a session whose client finds the server in ``variable``: (client, pid)."""
        yield server.start()
        yield self.start_node()
        return (yield self.session(*args, env={variable: server.server}))

    def in_session(self, pid: int, *argv: str):
        return desktop.run_in_session(pid, list(argv))

    @staticmethod
    def nxproxy_slave_port(client) -> int:
        for child in psutil.Process(client.transport.pid).children(recursive=True):
            for arg in child.cmdline():
                if arg.startswith("slave="):
                    return int(arg[len("slave="):])
        raise AssertionError("no nxproxy with a slave port")

    @inlineCallbacks
    def wait_for(self, check, what: str, *clients, timeout: float = 30):
        try:
            return (yield poll_blocking(check, bool, timeout, what))
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain(*clients)}") from None


class SharedFolderTests(ChannelTestCase):
    @inlineCallbacks
    def test_a_client_folder_in_the_desktop_both_ways_and_gone_after_the_session(self):
        yield self.start_node()
        folder = tempfile.mkdtemp(prefix="Documents-", dir=self.root)
        name = os.path.basename(folder)
        with open(os.path.join(folder, "from-client.txt"), "w") as f:
            f.write("written on the client\n")
        os.makedirs(os.path.join(self.home, ".qvd"))
        with open(os.path.join(self.home, ".qvd", "client.conf"), "w") as f:
            f.write(f"command.open_file = {self.opener('client')}\n")
        client, pid = yield self.session("--share", folder, "--usb", "1-1")
        yield self.wait_for(lambda: f"as ~/Redirected/{name}" in client.stderr,
                            "the share's announcement", client)
        self.assertIn("USB forwarding is off: this machine's kernel has no USB/IP support",
                      client.stderr)
        mount = os.path.join(self.vm_home(), "Redirected", name)
        self.assertIn(mount, desktop.mounts_under(self.vm_home()))

        seen = yield self.in_session(pid, "cat", f"Redirected/{name}/from-client.txt")
        self.assertEqual(seen.stdout, b"written on the client\n", seen.stderr)
        wrote = yield self.in_session(pid, "sh", "-c",
                                      f"echo written in the VM > Redirected/{name}/from-vm.txt")
        self.assertEqual(wrote.returncode, 0, wrote.stderr)
        with open(os.path.join(folder, "from-vm.txt")) as f:
            self.assertEqual(f.read(), "written in the VM\n")

        # the client asks the VM to open a file of the share; the VM asks the client
        vm_port = 11000 + self.display()
        opened = yield self.ask_to_open(self.nxproxy_slave_port(client), "from-client.txt",
                                        name, "vm")
        self.assertEqual(opened, f"{mount}/from-client.txt\n")
        opened = yield self.ask_to_open(vm_port, "from-vm.txt", name, "client")
        self.assertEqual(opened, f"{folder}/from-vm.txt\n")
        status, _, body = yield threads.deferToThread(
            slave_request, vm_port, "GET /ping HTTP/1.1\r\n\r\n")
        self.assertEqual((status, body), (200, "Pong!\n"))

        client.transport.signalProcess("TERM")
        self.assertEqual((yield client.ended), 0, client.stderr)
        yield self.wait_for(lambda: not desktop.mounts_under(self.vm_home())
                            and not os.path.exists(mount), "the share unmounted", client)

    @inlineCallbacks
    def ask_to_open(self, port: int, path: str, ticket: str, side: str):
        """``POST /open/<path>`` on a slave port; what the far side's open command got."""
        status, _, body = yield threads.deferToThread(
            slave_request, port, f"POST /open/{path} HTTP/1.1\r\nAuthorization: Basic"
            f" {self.slave_key()}\r\nX-QVD-Share-Ticket: {ticket}\r\n\r\n")
        self.assertEqual(status, 200, body)
        opened = self.opened(side)
        yield self.wait_for(lambda: os.path.exists(opened), f"the {side}'s open command")
        with open(opened) as f:
            return f.read()

    @inlineCallbacks
    def test_the_slave_server_wants_the_session_key(self):
        yield self.start_node()
        client, _ = yield self.session()
        port = self.nxproxy_slave_port(client)
        put = "PUT /shares/tmp HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: qvd:sftp/1.0\r\n"
        status, head, _ = yield threads.deferToThread(slave_request, port, put + "\r\n")
        self.assertEqual(status, 401)
        self.assertIn('WWW-Authenticate: Basic realm="QVD"', head)
        status, _, _ = yield threads.deferToThread(
            slave_request, port, put + "Authorization: Basic not-the-key\r\n\r\n")
        self.assertEqual(status, 403)
        key = self.slave_key()
        status, _, body = yield threads.deferToThread(
            slave_request, port, "POST /usbip HTTP/1.1\r\nConnection: Upgrade\r\n"
            f"Upgrade: qvd:usbip/1.0\r\nAuthorization: Basic {key}\r\n\r\n")
        self.assertEqual((status, body.strip()), (501, "USB forwarding needs USB/IP in the"
                         " virtual machine's kernel (the vhci-hcd module: modprobe vhci-hcd)."))


class PrintingTests(ChannelTestCase):
    @inlineCallbacks
    def test_lp_in_the_desktop_prints_on_the_clients_cups(self):
        """CUPS-PDF on the client's CUPS; ``lp`` in the VM (CUPS_SERVER from the session)."""
        printer = PDFPrinter(self)
        client, pid = yield self.session_using(printer, "CUPS_SERVER")
        queues = yield self.in_session(pid, "lpstat", "-p")
        self.assertIn(b"printer pdf", queues.stdout, queues.stderr)
        job = yield desktop.run_in_session(pid, ["lp", "-d", "pdf", "-t", "qvd-test-job"],
                                           stdin=DOCUMENT)
        self.assertEqual(job.returncode, 0, job.stderr)
        yield self.wait_for(lambda: "Printed in the VM" in printer.text(),
                            "the page as a PDF of the client's printer", client)
        [pdf] = printer.pdfs()
        self.assertTrue(os.path.basename(pdf).startswith("qvd-test-job"), pdf)


class SoundTests(ChannelTestCase):
    @inlineCallbacks
    def test_a_tone_played_in_the_desktop_is_heard_on_the_client(self):
        pulse = UserPulseAudio(self)
        client, pid = yield self.session_using(pulse, "PULSE_SERVER", "--audio")

        def tunnel_up():
            d = self.in_session(pid, "pactl", "list", "short", "sinks")
            return d.addCallback(lambda done: b"qvd" in done.stdout)

        yield self.wait_for(tunnel_up, "the session's sound tunnelled to the client", client)
        tone = os.path.join(self.root, "tone.wav")
        subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", tone, "synth", "2", "sine",
                        str(TONE_HZ), "vol", "0.5"], check=True)
        os.chmod(tone, 0o644)
        recording = os.path.join(self.root, "heard.wav")
        recorder = subprocess.Popen(["parecord", "-d", "speakers.monitor", "--file-format=wav",
                                     recording], env=dict(os.environ, PULSE_SERVER=pulse.server))
        self.addCleanup(recorder.kill)
        played = yield self.in_session(pid, "paplay", tone)
        recorder.terminate()
        yield threads.deferToThread(recorder.wait, 10)
        self.assertEqual(played.returncode, 0, played.stderr)
        stat = subprocess.run(["sox", recording, "-n", "remix", "1", "silence", "1", "0.05", "1%",
                               "reverse", "silence", "1", "0.05", "1%", "reverse", "stat"],
                              capture_output=True, text=True).stderr
        length = float(re.search(r"Length \(seconds\):\s+([\d.]+)", stat).group(1))
        frequency = int(re.search(r"Rough\s+frequency:\s+(\d+)", stat).group(1))
        self.assertGreater(length, 1.5, stat)
        self.assertLessEqual(abs(frequency - TONE_HZ), TONE_HZ * 0.03, stat)
