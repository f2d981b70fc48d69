"""The ``TOTP`` plugin and ``qa user ... totp new|del`` on a real QVD-DB; time from a Clock."""

from __future__ import annotations

import io
import json
import os
import subprocess
import urllib.parse
from typing import Any, Generator

from twisted.internet import defer
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.admin.cli import main as qa_main
from qvd.l7r.auth import AuthServices, IAuthPlugin, IAuthPluginFactory
from qvd.l7r.auth.default import default
from qvd.l7r.auth.totp import TOTPPlugin, totp
from qvd.totp import Window, code, decode_secret, matching_step
from tests.l7r.test_auth import PEER, AuthTestCase, basic, refused

NOW = 1_800_000_015.0  # a quarter into a 30 s step


class CodeTests(unittest.TestCase):
    def test_rfc_6238_vectors(self) -> None:
        key = b"12345678901234567890"
        for now, expected in ((59, "94287082"), (1111111109, "07081804"),
                              (1234567890, "89005924"), (2000000000, "69279037")):
            self.assertEqual(code(key, Window().step(now), 8), expected)

    def test_matching_step_honours_the_leeways(self) -> None:
        key = decode_secret("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
        window = Window()
        step = window.step(NOW)
        self.assertEqual(matching_step(key, code(key, step), NOW, window), step)
        self.assertEqual(matching_step(key, code(key, step - 1), NOW, window), step - 1)
        self.assertIsNone(matching_step(key, code(key, step - 2), NOW, window))
        self.assertIsNone(matching_step(key, code(key, step + 1), NOW, window))
        ahead = Window(leeway=0, leeway_before=1)
        self.assertEqual(matching_step(key, code(key, step + 1), NOW, ahead), step + 1)
        self.assertIsNone(matching_step(key, code(key, step - 1), NOW, ahead))
        self.assertIsNone(matching_step(key, "12345a", NOW, window))


def qr_matrix(text: str) -> list[list[bool]]:
    """The modules (True = dark) of a half-block QR code as ``qa`` prints it."""
    halves = {"\u2588": (False, False), "\u2580": (False, True), "\u2584": (True, False),
              " ": (True, True)}
    rows: list[list[bool]] = []
    for line in text.splitlines():
        pairs = [halves[ch] for ch in line]
        rows += [[p[0] for p in pairs], [p[1] for p in pairs]]
    return rows


def decode_qr(rows: list[list[bool]], directory: str) -> str:
    """What zbarimg reads in the modules, drawn 4 pixels each (PBM: 1 = black)."""
    scale = 4
    path = os.path.join(directory, "qr.pbm")
    with open(path, "w") as f:
        f.write(f"P1\n{len(rows[0]) * scale} {len(rows) * scale}\n")
        for row in rows:
            line = " ".join("1" if dark else "0" for dark in row for _ in range(scale))
            f.write((line + "\n") * scale)
    return subprocess.run(["zbarimg", "--raw", "-q", path], capture_output=True, text=True,
                          check=True).stdout.strip()


class TOTPTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(NOW)
        self.set_config(-1, "l7r.auth.plugins", "TOTP")
        self.conf = self.db.write_conf(self.make_dir())

    def make_dir(self) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return directory

    def qa(self, *words: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code_ = qa_main(["-c", self.conf, *words], out, err)
        self.assertEqual(code_, 0, err.getvalue())
        return out.getvalue()

    def enrol(self, login: str) -> bytes:
        document = json.loads(self.qa("--format", "json", "user", login, "totp", "new"))
        return decode_secret(document["rows"][0]["secret"])

    @defer.inlineCallbacks
    def authenticator(self, extra: str = "", plugins: Any = None) -> Generator[Any, Any, Any]:
        return (yield super().authenticator(extra, plugins=plugins or [totp, default]))

    @defer.inlineCallbacks
    def login(self, login: str, password: str, authenticator: Any = None):
        authenticator = authenticator or (yield self.authenticator())
        return (yield authenticator.for_connection(PEER).authenticate(basic(login, password)))

    def now_code(self, key: bytes, steps: int = 0) -> str:
        return code(key, Window().step(self.clock.seconds()) + steps)

    def test_the_plugin_provides_the_interfaces(self) -> None:
        self.assertTrue(verifyObject(IAuthPluginFactory, totp))
        services = AuthServices(self.db.config(), None, self.clock)  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IAuthPlugin, TOTPPlugin(services)))

    def test_enrolment_prints_the_uri_and_a_qr_code_of_it(self) -> None:
        out = self.qa("user", "dave", "totp", "new")
        uri = next(line for line in out.splitlines() if line.startswith("otpauth://"))
        self.assertEqual(decode_qr(qr_matrix(out.split("\n\n")[1]), self.make_dir()), uri)
        parsed = urllib.parse.urlparse(uri)
        self.assertEqual((parsed.scheme, parsed.netloc, urllib.parse.unquote(parsed.path)),
                         ("otpauth", "totp", "/QVD:dave@default"))
        query = dict(urllib.parse.parse_qsl(parsed.query))
        stored = self.db.query(
            "SELECT up.value FROM user_properties up JOIN qvd_object_properties_list q"
            " ON q.id = up.property_id JOIN properties_list pl ON pl.id = q.property_id"
            " WHERE up.user_id = %s AND pl.key = 'l7r.auth.plugin.totp.secret32'", (self.dave,))
        self.assertEqual([(query["secret"],)], stored)
        self.assertEqual((query["issuer"], query["digits"], query["period"]), ("QVD", "6", "30"))
        self.assertEqual(len(decode_secret(query["secret"])), 20)
        self.assertIn("| dave  | default |", out)
        self.assertIn("Total: 1", self.qa("user", "dave", "totp", "del"))
        self.assertEqual(self.db.query("SELECT * FROM user_properties"), [])

    @defer.inlineCallbacks
    def test_right_wrong_expired_and_early_codes(self):
        key = self.enrol("dave")
        auth = yield self.login("dave", "d4ve" + self.now_code(key))
        self.assertEqual(auth.user_id, self.dave)
        wrong = "000000" if self.now_code(key) != "000000" else "111111"
        yield refused(self.login("dave", "d4ve" + wrong))
        yield refused(self.login("dave", "wrong" + self.now_code(key, 1)), what="wrong password")
        yield refused(self.login("dave", "d4ve"), what="no code")
        yield refused(self.login("dave", "d4ve" + self.now_code(key, -2)), what="expired")
        yield refused(self.login("dave", "d4ve" + self.now_code(key, 1)), what="from the future")

    @defer.inlineCallbacks
    def test_leeway_honoured(self):
        key = self.enrol("dave")
        previous = self.now_code(key, -1)
        yield self.login("dave", "d4ve" + previous)  # leeway 1: the last step still counts
        self.set_config(-1, "l7r.auth.plugin.totp.leeway_before", "1")
        self.set_config(-1, "l7r.auth.plugin.totp.leeway", "0")
        yield self.login("dave", "d4ve" + self.now_code(key, 1))  # a step ahead of the clock
        yield refused(self.login("dave", "d4ve" + self.now_code(key)), what="older than the last")
        self.clock.advance(60)
        yield refused(self.login("dave", "d4ve" + self.now_code(key, -1)), what="leeway 0")

    @defer.inlineCallbacks
    def test_a_code_is_accepted_once_by_every_l7r(self):
        key = self.enrol("dave")
        first = yield self.authenticator()
        second = yield self.authenticator()
        code_now = self.now_code(key)
        yield self.login("dave", "d4ve" + code_now, first)
        yield refused(self.login("dave", "d4ve" + code_now, first))
        yield refused(self.login("dave", "d4ve" + code_now, second), what="another L7R")
        yield refused(self.login("dave", "d4ve" + self.now_code(key, -1), second),
                      what="an older code")
        self.clock.advance(30)
        yield self.login("dave", "d4ve" + self.now_code(key), second)

    @defer.inlineCallbacks
    def test_simultaneous_logins_with_one_code_let_one_in(self):
        key = self.enrol("dave")
        authenticators = []
        for _ in range(3):
            authenticators.append((yield self.authenticator()))
        password = "d4ve" + self.now_code(key)
        results = yield defer.DeferredList(
            [self.login("dave", password, a) for a in authenticators * 2], consumeErrors=True)
        self.assertEqual(sum(1 for ok, _ in results if ok), 1, results)

    @defer.inlineCallbacks
    def test_users_without_a_usable_secret_are_refused(self):
        yield refused(self.login("dave", "d4ve123456"))
        self.qa("user", "dave", "set", "property", "l7r.auth.plugin.totp.secret32=not-base32!")
        yield refused(self.login("dave", "d4ve123456"))

    @defer.inlineCallbacks
    def test_token_size(self):
        self.set_config(-1, "l7r.auth.plugin.totp.token_size", "8")
        key = self.enrol("dave")
        yield self.login("dave", "d4ve" + code(key, Window().step(self.clock.seconds()), 8))
