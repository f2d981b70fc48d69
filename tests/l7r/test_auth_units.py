"""Credential parsing, token format and throttling: the parts that need no database."""

from __future__ import annotations

import base64

from twisted.internet import task
from twisted.trial import unittest

from qvd.config import Config
from qvd.http.head import Headers
from qvd.l7r.auth import PluginError, Unauthorized, token_header_value
from qvd.l7r.auth.chain import plugin_names
from qvd.l7r.auth.credentials import Basic, Bearer, extra_headers, parse_authorization
from qvd.l7r.auth.throttle import Throttle, address_key, login_key
from qvd.l7r.auth.tokens import new_token


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class AuthorizationTests(unittest.TestCase):
    def test_basic_splits_at_the_first_colon(self) -> None:
        self.assertEqual(parse_authorization("Basic " + b64("alice@acme:pa:ss:")),
                         Basic("alice@acme", "pa:ss:"))

    def test_scheme_is_case_insensitive_and_blanks_in_base64_are_ignored(self) -> None:
        encoded = b64("bob:secret")
        self.assertEqual(parse_authorization(f"  basic {encoded[:4]}\n {encoded[4:]} "),
                         Basic("bob", "secret"))

    def test_bearer_carries_the_base64_of_the_token(self) -> None:
        self.assertEqual(parse_authorization("Bearer " + b64("Tok3n") + "\n"), Bearer("Tok3n"))

    def test_malformed_values_are_unauthorized(self) -> None:
        for value in (None, "", "   ", b64("a:b"), "Digest " + b64("a:b"), "Basic",
                      "Basic !!!notbase64", "Basic " + b64("no-colon"), "Basic " + b64(":pw"),
                      "Basic " + b64("alice:"), "Bearer ", "Bearer %%%",
                      "Basic " + base64.b64encode(b"al\xffce:pw").decode()):
            self.assertRaises(Unauthorized, parse_authorization, value)


class ExtraHeaderTests(unittest.TestCase):
    def test_auth_hex_headers_are_decoded_and_bad_ones_skipped(self) -> None:
        headers = Headers([
            ("Authorization", "Basic " + b64("a:b")),
            ("Auth-" + "LANG".encode().hex(), b64("es_ES.UTF-8")),
            ("auth-" + "qvd.env".encode().hex().upper(), b64("x y")),
            ("Auth-zz", b64("bad hex")),
            ("Auth-" + "k".encode().hex(), "not base64!"),
            ("Auth-", b64("no name")),
            ("X-Other", "1"),
        ])
        self.assertEqual(extra_headers(headers), {"LANG": "es_ES.UTF-8", "qvd.env": "x y"})


class TokenFormatTests(unittest.TestCase):
    def test_tokens_are_43_alphanumerics_and_differ(self) -> None:
        tokens = {new_token() for _ in range(50)}
        self.assertEqual(len(tokens), 50)
        for token in tokens:
            self.assertRegex(token, r"^[A-Za-z0-9]{43}$")

    def test_header_value_has_no_newline(self) -> None:
        value = token_header_value("abc")
        self.assertEqual(value, "YWJj")
        self.assertEqual(parse_authorization(f"Bearer {value}"), Bearer("abc"))


class PluginNameTests(unittest.TestCase):
    def test_head_tenant_tail_in_order_without_repeats(self) -> None:
        config = Config({"l7r.auth.plugins.head": "Audit", "l7r.auth.plugins": "ldap, auto,",
                         "l7r.auth.plugins.tail": "default,LDAP"})
        config.replace_db_rows([(7, "l7r.auth.plugins", "totp")])
        self.assertEqual(plugin_names(config, 1), ["audit", "ldap", "auto", "default"])
        self.assertEqual(plugin_names(config, 7), ["audit", "totp", "default", "ldap"])

    def test_names_must_be_words(self) -> None:
        config = Config({"l7r.auth.plugins": "ok, ../evil"})
        e = self.assertRaises(PluginError, plugin_names, config, 1)
        self.assertIn("'../evil'", str(e))


class ThrottleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.config = Config({"l7r.auth.throttle.max_failures": "3",
                              "l7r.auth.throttle.window": "60",
                              "l7r.auth.throttle.max_entries": "100"})
        self.throttle = Throttle(self.config, self.clock)

    def fail(self, key: object, times: int) -> None:
        for _ in range(times):
            self.throttle.failed(key)

    def test_locks_after_max_failures_within_the_window_until_it_passes(self) -> None:
        key = address_key("192.0.2.1")
        self.fail(key, 2)
        self.assertFalse(self.throttle.refuses(key))
        self.clock.advance(59)
        self.fail(key, 1)
        self.assertTrue(self.throttle.refuses(key))
        self.assertFalse(self.throttle.refuses(address_key("192.0.2.2")))
        self.clock.advance(59.5)
        self.assertTrue(self.throttle.refuses(key))
        self.clock.advance(1)
        self.assertFalse(self.throttle.refuses(key))
        self.fail(key, 1)
        self.assertFalse(self.throttle.refuses(key), "a new window starts from scratch")

    def test_failures_older_than_the_window_are_forgotten(self) -> None:
        key = login_key(1, "alice")
        self.fail(key, 2)
        self.clock.advance(60)
        self.fail(key, 2)
        self.assertFalse(self.throttle.refuses(key))

    def test_forget_clears_one_key_only(self) -> None:
        alice, bob = login_key(1, "alice"), login_key(1, "bob")
        self.fail(alice, 2)
        self.fail(bob, 2)
        self.throttle.forget(alice)
        self.fail(alice, 1)
        self.fail(bob, 1)
        self.assertFalse(self.throttle.refuses(alice))
        self.assertTrue(self.throttle.refuses(bob))

    def test_zero_disables(self) -> None:
        self.config.replace_db_rows([(-1, "l7r.auth.throttle.max_failures", "0")])
        key = address_key("192.0.2.1")
        self.fail(key, 50)
        self.assertFalse(self.throttle.refuses(key))
        self.assertEqual(len(self.throttle), 0)

    def test_memory_is_bounded(self) -> None:
        for n in range(250):
            self.throttle.failed(login_key(1, f"user{n}"))
            self.clock.advance(0.01)
        self.assertEqual(len(self.throttle), 100)
        self.clock.advance(61)
        self.throttle.failed(login_key(1, "late"))
        self.assertEqual(len(self.throttle), 1, "expired entries are pruned")

    def test_ipv6_clients_are_throttled_by_their_64(self) -> None:
        self.assertEqual(address_key("2001:db8:1:2:aaaa::1"), address_key("2001:db8:1:2::ffff"))
        self.assertNotEqual(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"))
        self.assertEqual(address_key("/run/qvd.sock"), ("address", "/run/qvd.sock"))
        self.assertEqual(address_key("2001:db8:1:2::7"), ("address", "2001:db8:1:2::/64"))
