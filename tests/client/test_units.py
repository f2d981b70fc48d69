"""The client's pieces on their own: reply parsing, error sentences, settings, nxproxy argv."""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from qvd.client import display
from qvd.client.errors import Exit, from_reply
from qvd.client.l7r import L7RProtocol, ProtocolError, Reply, query
from qvd.client.session import nxproxy_argv
from qvd.client.settings import Settings, load_client_config, nx_option_words, resolve
from qvd.config import Config, ConfigError
from qvd.http.head import Headers


class ReplyParsingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.infos: list[str] = []
        self.protocol = L7RProtocol(self.infos.append)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def test_request_head_and_progress_then_body_in_pieces(self):
        d = self.protocol.request("/qvd/list_of_vm", [("Authorization", "Basic eDp5")])
        self.assertTrue(self.transport.value().startswith(
            b"GET /qvd/list_of_vm HTTP/1.1\r\nAuthorization: Basic eDp5\r\nUser-Agent: "))
        self.protocol.dataReceived(
            b"HTTP/1.1 102 Processing\nX-QVD-VM-Info: one\n\n"
            b"HTTP/1.1 102 Processing\r\nX-QVD-VM-Info: two\r\n\r\nHTTP/1.1 2")
        self.protocol.dataReceived(b"00 OK\r\nContent-Length: 4\r\n\r\n[")
        self.assertNoResult(d)
        self.protocol.dataReceived(b"]\r\n")
        reply = self.successResultOf(d)
        self.assertEqual((reply.status, reply.json(), self.infos), (200, [], ["one", "two"]))

    def test_bytes_behind_101_go_to_the_next_protocol_first(self):
        d = self.protocol.request("/qvd/connect_to_vm?id=1", [])
        self.protocol.dataReceived(
            b"HTTP/1.1 101 Switching Protocols\r\nX-QVD-Slave-Key: k\r\n\r\nNX")
        self.assertEqual(self.successResultOf(d).status, 101)
        received: list[bytes] = []

        class Sink(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        self.protocol.switch(Sink())
        self.protocol.dataReceived(b"more")
        self.assertEqual(received, [b"NX", b"more"])

    def test_not_qvd_http(self):
        d = self.protocol.request("/qvd/ping", [])
        self.protocol.dataReceived(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.failureResultOf(d, ProtocolError)

    def test_query_escapes_all_but_unreserved(self):
        self.assertEqual(query([("id", "1"), ("qvd.client.keyboard", "pc105/us x")]),
                         "id=1&qvd.client.keyboard=pc105%2Fus%20x")


def reply(status: int, body: str) -> Reply:
    return Reply(status, Headers(), body.encode())


class ErrorSentenceTests(unittest.TestCase):
    def test_documented_refusals(self):
        cases = [
            (401, "401 Unauthorized\n", "Wrong user name or password.", Exit.AUTH),
            (503, "Server is blocked", "The server is blocked for maintenance", Exit.SERVER),
            (503, "The database is not available, retry later", "cannot reach its database",
             Exit.SERVER),
            (503, "Server is stopped", "The server is stopped and accepts no", Exit.SERVER),
            (503, "Host is not registered in the database", "not registered", Exit.SERVER),
            (403, "The requested virtual machine is offline for maintenance",
             "The virtual machine is blocked", Exit.VM),
            (404, "The requested virtual machine does not exist",
             "The virtual machine does not exist (any more).", Exit.VM),
            (426, "426 Upgrade Required\n", "This client is too old", Exit.FAILED),
            (503, "The requested virtual machine is not available: Unable to acquire VM, close"
                  " other clients, retry later.", "Another client holds", Exit.VM),
            (503, "The requested virtual machine is not available: Failed to start virtual"
                  " machine 3, retry later.",
             "The virtual machine is not available (Failed to start virtual machine 3): retry"
             " later.", Exit.VM),
            (500, "Internal error", "The server failed (Internal error).", Exit.SERVER),
        ]
        for status, body, sentence, code in cases:
            error = from_reply(reply(status, body))
            self.assertIn(sentence, str(error), body)
            self.assertEqual(error.status, code, body)
            self.assertEqual(error.detail, f"HTTP {status}: {body.strip()}")

    def test_bearer_401(self):
        self.assertIn("token is not valid", str(from_reply(reply(401, ""), bearer=True)))


class SettingsTests(unittest.TestCase):
    def config(self, text: str = "") -> Config:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return load_client_config(path)

    def test_command_line_over_environment_over_files(self):
        config = self.config("client.host.name = file-host\nclient.user.name = file-user\n"
                             "client.link = lan\nclient.geometry = 800x600\n")
        env = {"QVDHOST": "env-host", "QVDLOGIN": "env-user", "QVDPASSWORD": "env-pw"}
        s = resolve(config, {"user": "cli-user"}, env)
        self.assertEqual((s.host, s.port, s.user, s.password, s.link, s.geometry),
                         ("env-host", 8443, "cli-user", "env-pw", "lan", "800x600"))
        self.assertIsNone(s.keyboard)
        self.assertEqual(resolve(config, {}, {}).host, "file-host")

    def test_missing_host_and_half_a_client_certificate(self):
        self.assertRaises(ConfigError, resolve, self.config(), {}, {})
        self.assertRaises(ConfigError, resolve, self.config(), {"host": "h", "cert": "c"}, {})

    def test_nxproxy_argv(self):
        s = resolve(self.config("client.nxproxy.extra_args = -d 3\n"),
                    {"host": "h", "nx_options": "nx/nx,data=0,cache=16384:0"}, {})
        self.assertEqual(nxproxy_argv(s, 45123, ["cups=631", "slave=62001"]),
                         ["/usr/bin/nxproxy", "-d", "3", "data=0", "cache=16384", "-S",
                          "cups=631", "slave=62001", "localhost:41123"])
        self.assertEqual(nx_option_words("link=lan,pack=0"), ["link=lan", "pack=0"])

    def test_client_params(self):
        s = Settings(host="h", port=1, geometry="1x1", keyboard="pc105/us", fullscreen=True,
                     printing=False, nxagent_args="cache=8m")
        self.assertEqual(dict(s.client_params()), {
            "qvd.client.os": "linux", "qvd.client.link": "adsl", "qvd.client.fullscreen": "1",
            "qvd.client.printing.enabled": "0", "qvd.client.geometry": "1x1",
            "qvd.client.keyboard": "pc105/us", "qvd.client.nxagent.extra_args": "cache=8m"})


class DisplayTests(unittest.TestCase):
    def test_x_server_answers(self):
        self.assertEqual(display.parse_geometry("  dimensions:    1280x1024 pixels (325x260 mm)"),
                         "1280x1024")
        self.assertEqual(display.parse_keyboard(
            '_XKB_RULES_NAMES(STRING) = "evdev", "pc105", "de,us", "", ""'), "pc105/de")
        self.assertIsNone(display.parse_keyboard("_XKB_RULES_NAMES:  not found."))
