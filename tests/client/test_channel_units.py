"""This machine's side of the channels, piece by piece: what client.conf and the
command line share, where CUPS and PulseAudio are, USB without kernel support, and
what the client's slave server answers."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial import unittest

from qvd.client import usb
from qvd.client.audio import LocalSound, tcp_port
from qvd.client.channels import LocalChannels, cups_port
from qvd.client.settings import Settings, load_client_config, resolve
from qvd.client.slave import ClientSlaveEndpoints
from qvd.config import ConfigError
from qvd.http.head import Headers
from qvd.http.server import Request


class SettingsTests(unittest.TestCase):
    def config(self, text: str = ""):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return load_client_config(path)

    def folders(self, *names: str) -> list[str]:
        base = os.path.abspath(self.mktemp())
        paths = [os.path.join(base, n) for n in names]
        for p in paths:
            os.makedirs(p)
        return paths

    def test_shares_from_client_conf_and_the_command_line(self):
        a, b, c = self.folders("a", "b", "c")
        conf = f"client.share.0 = {a}\nclient.share.1 = {b}\nclient.share.3 = {c}\n"
        s = resolve(self.config(conf), {"host": "h", "share": [c, a]}, {})
        self.assertEqual(s.shares, [c, a, b], "numbered from 0 without gaps; each once")
        off = resolve(self.config(conf + "client.file_sharing.enable = 0\n"),
                      {"host": "h"}, {})
        self.assertEqual(off.shares, [])

    def test_bad_shares(self):
        self.assertRaisesRegex(ConfigError, "no folder /no/such", resolve, self.config(),
                               {"host": "h", "share": ["/no/such"]}, {})
        [a] = self.folders("a")
        self.assertRaisesRegex(ConfigError, "client.slave.enable", resolve,
                               self.config("client.slave.enable = 0\n"),
                               {"host": "h", "share": [a]}, {})

    def test_audio_usb_and_what_the_vm_is_told(self):
        s = resolve(self.config("client.usb.enable = 1\nclient.usb.share_list = 0f45:2421\n"),
                    {"host": "h", "audio": True, "usb": ["1-1"]}, {})
        self.assertTrue(s.audio)
        self.assertEqual(s.usb, ["1-1", "0f45:2421"])
        params = dict(s.client_params())
        self.assertEqual((params["qvd.client.usb.enabled"],
                          params["qvd.client.usb.implementation"]), ("1", "usbip"))
        self.assertFalse(resolve(self.config(), {"host": "h"}, {}).audio)


class LocalServicesTests(unittest.TestCase):
    def test_where_cups_listens(self):
        self.assertEqual(cups_port({}), 631)
        self.assertEqual(cups_port({"CUPS_SERVER": "localhost:16631"}), 16631)
        self.assertEqual(cups_port({"CUPS_SERVER": "printers.example.com:631"}), 631)
        self.assertEqual(cups_port({"CUPS_SERVER": "/run/cups/cups.sock"}), 631)

    def test_pulse_servers_nxproxy_can_use_directly(self):
        self.assertEqual(tcp_port("tcp:localhost:4713"), 4713)
        self.assertEqual(tcp_port("4714"), 4714)
        self.assertIsNone(tcp_port("unix:/run/user/1000/pulse/native"))
        self.assertIsNone(tcp_port("tcp:other-host:4713"))

    def test_no_pulseaudio_means_no_sound_and_a_warning(self):
        sound = LocalSound("/bin/false", {"PULSE_SERVER": "unix:/nonexistent"})
        d = sound.start()
        d.addCallback(self.assertIsNone)
        return d

    def test_the_nxproxy_options(self):
        s = Settings(host="h", port=1, printing=True, audio=False, slave=True)
        channels = LocalChannels(reactor, s, "k3y")
        d = channels.prepare()

        def check(result):
            options, env = result
            self.assertEqual(options[0], "cups=631")
            self.assertRegex(options[1], r"^slave=6[23]\d\d\d$")
            self.assertTrue(os.access(env["NX_SLAVE_CMD"], os.X_OK))
            return channels.close().addCallback(
                lambda _: self.assertFalse(os.path.exists(env["NX_SLAVE_CMD"])))

        return d.addCallback(check)

    def test_a_slave_command_of_ones_own(self):
        s = Settings(host="h", port=1, printing=False, slave=True, slave_command="/opt/slave")
        d = LocalChannels(reactor, s, "k3y").prepare()
        d.addCallback(lambda result: self.assertEqual(
            result[1], {"NX_SLAVE_CMD": "/opt/slave", "QVD_SLAVE_CMD": "/opt/slave"}))
        return d


class UsbTests(unittest.TestCase):
    def test_a_kernel_without_usbip(self):
        self.assertIn("modprobe usbip-host", usb.unavailable("/nonexistent/usbip-host"))

    def test_devices_by_bus_id_or_vendor_and_product(self):
        devices = self.mktemp()
        for busid, vendor, product, serial in (("1-1", "0f45", "2421", "A1"),
                                               ("1-2", "139a", "0608", "3210bf331301")):
            os.makedirs(os.path.join(devices, busid))
            for name, value in (("idVendor", vendor), ("idProduct", product),
                                ("serial", serial)):
                with open(os.path.join(devices, busid, name), "w") as f:
                    f.write(value + "\n")
        self.assertEqual(usb.find_busid("1-2", devices), "1-2")
        self.assertEqual(usb.find_busid("0F45:2421", devices), "1-1")
        self.assertEqual(usb.find_busid("139a:0608@3210bf331301", devices), "1-2")
        self.assertIsNone(usb.find_busid("139a:0608@other", devices))
        self.assertIsNone(usb.find_busid("9-9", devices))


class ClientSlaveTests(unittest.TestCase):
    def setUp(self):
        self.folder = self.mktemp()
        os.makedirs(self.folder)
        open(os.path.join(self.folder, "report.odt"), "w").close()
        self.endpoints = ClientSlaveEndpoints(reactor, "/bin/true",
                                              lambda: {"Documents": self.folder})
        self.routes = {r.prefix: r for r in self.endpoints.routes()}

    def open(self, path: str, ticket: str):
        request = Request("POST", "/open/" + path, Headers([("X-QVD-Share-Ticket", ticket)]))
        return self.routes["/open/"].handle(request, path)

    def test_ping_and_version_need_no_key(self):
        self.assertFalse(self.routes["/ping"].auth or self.routes["/version"].auth)
        self.assertTrue(self.routes["/open/"].auth)
        self.assertEqual(self.routes["/ping"].handle(None, "").body, b"Pong!\n")

    def test_open_a_file_of_a_shared_folder(self):
        self.assertEqual(self.open("report.odt", "Pictures").status, 404)
        self.assertEqual(self.open("missing.odt", "Documents").status, 404)
        self.assertEqual(self.open("../../etc/passwd", "Documents").status, 404)
        self.assertEqual(self.endpoints.opened, [])
        self.assertEqual(self.open("report.odt", "Documents").status, 200)
        [opened] = self.endpoints.opened
        return opened.addCallback(self.assertEqual, (0, ""))
