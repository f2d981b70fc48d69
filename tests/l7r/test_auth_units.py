"""Credential parsing, token format and throttling: the parts that need no database."""

from __future__ import annotations

import base64
import os
from typing import Optional

from twisted.internet import task
from twisted.trial import unittest

from qvd.config import Config
from qvd.http.head import Headers
from qvd.l7r.auth import PluginError, Unauthorized, token_header_value
from qvd.l7r.auth.chain import plugin_names
from qvd.l7r.auth.credentials import Basic, Bearer, extra_headers, parse_authorization
from qvd.l7r.auth.failures import FailureTable
from qvd.l7r.auth.throttle import Throttle, address_key
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


class FailureTableTests(unittest.TestCase):
    """The node-wide table of failure counts (a real file, shared like the processes do)."""

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "auth-failures")
        self.table = self.open()

    def open(self, slots: int = 64, namespace: str = "db1") -> FailureTable:
        table = FailureTable(self.path, slots, namespace)
        self.addCleanup(table.close)
        return table

    def test_locks_at_the_limit_within_the_window_until_it_passes(self) -> None:
        for now in (0, 1):
            self.assertEqual(self.table.add("k", now, 60, 3).locked_until, 0)
        self.assertEqual(self.table.add("k", 59, 60, 3).locked_until, 119)
        self.assertEqual(self.table.get("k", 118, 60).count, 3)
        self.assertIsNone(self.table.get("k", 119, 60), "the lock is over")
        self.assertEqual(self.table.add("k", 120, 60, 3).count, 1, "a new window from scratch")

    def test_failures_older_than_the_window_are_forgotten(self) -> None:
        self.table.add("k", 0, 60, 3)
        self.table.add("k", 1, 60, 3)
        self.assertIsNone(self.table.get("k", 60, 60))
        self.assertEqual(self.table.add("k", 61, 60, 3).count, 1)

    def test_forget_clears_one_key_only(self) -> None:
        for key in ("alice", "bob"):
            self.table.add(key, 0, 60, 3)
        self.table.forget("alice")
        self.assertIsNone(self.table.get("alice", 1, 60))
        self.assertEqual(self.table.get("bob", 1, 60).count, 1)

    def test_every_process_sees_the_same_counts(self) -> None:
        other = self.open()
        self.table.add("k", 0, 60, 3)
        other.add("k", 1, 60, 3)
        self.assertEqual(self.table.add("k", 2, 60, 3).locked_until, 62)
        self.assertIsNone(self.open(namespace="db2").get("k", 3, 60), "another node's counts")

    def test_memory_is_bounded_and_the_least_recent_go_first(self) -> None:
        size = os.path.getsize(self.path)
        for n in range(1000):
            self.table.add(f"user{n}", n / 100, 60, 3)
        self.assertEqual(os.path.getsize(self.path), size)
        self.assertEqual(len(self.table), 64)
        self.assertIsNotNone(self.table.get("user999", 10, 60))
        self.assertIsNone(self.table.get("user0", 10, 60))

    def test_a_later_process_keeps_the_size_the_first_gave_it(self) -> None:
        self.table.add("k", 0, 60, 3)
        bigger = self.open(slots=1000)
        self.assertEqual(bigger.slots, 64)
        self.assertEqual(bigger.get("k", 1, 60).count, 1)


class ThrottleTests(unittest.TestCase):
    """The policy: per (address, login) at 3, per login at 5, per address at 8."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.config = Config({"l7r.auth.throttle.max_failures": "3",
                              "l7r.auth.throttle.max_failures.login": "5",
                              "l7r.auth.throttle.max_failures.address": "8",
                              "l7r.auth.throttle.window": "60",
                              "l7r.auth.throttle.max_entries": "100",
                              "path.run": self.mktemp(), "database.name": "throttle"})
        self.throttle = Throttle(self.config, self.clock)
        self.addCleanup(self.throttle.close)

    def fail(self, times: int, address: str, login: Optional[str] = None) -> None:
        for _ in range(times):
            self.throttle.failed(address_key(address), *((1, login) if login else ()))

    def refuses(self, address: str, login: str) -> bool:
        key = address_key(address)
        return self.throttle.refuses_address(key) or self.throttle.refuses_login(key, 1, login)

    def test_one_login_locked_from_one_address_leaves_its_neighbours_alone(self) -> None:
        self.fail(2, "192.0.2.1", "alice")
        self.assertFalse(self.refuses("192.0.2.1", "alice"))
        self.fail(1, "192.0.2.1", "alice")
        self.assertTrue(self.refuses("192.0.2.1", "alice"))
        self.assertFalse(self.refuses("192.0.2.1", "bob"), "another user behind the same NAT")
        self.assertFalse(self.refuses("192.0.2.2", "alice"), "the same user elsewhere")
        self.clock.advance(60)
        self.assertFalse(self.refuses("192.0.2.1", "alice"))

    def test_a_login_guessed_from_many_addresses_is_locked_everywhere(self) -> None:
        for n in range(5):
            self.fail(1, f"198.51.100.{n}", "alice")
        self.assertTrue(self.refuses("203.0.113.1", "alice"))
        self.assertFalse(self.refuses("203.0.113.1", "bob"))

    def test_a_spray_locks_its_address(self) -> None:
        for n in range(7):
            self.fail(1, "192.0.2.1", f"user{n}")
        self.assertFalse(self.refuses("192.0.2.1", "carol"))
        self.fail(1, "192.0.2.1")  # a failure without a login counts for the address
        self.assertTrue(self.refuses("192.0.2.1", "carol"))
        self.assertFalse(self.refuses("192.0.2.2", "carol"))

    def test_a_success_clears_its_login_not_its_address(self) -> None:
        self.fail(2, "192.0.2.1", "alice")
        self.fail(6, "192.0.2.1", "mallory")
        self.throttle.succeeded(address_key("192.0.2.1"), 1, "alice")
        self.fail(2, "192.0.2.1", "alice")
        self.assertFalse(self.throttle.refuses_login(address_key("192.0.2.1"), 1, "alice"))
        self.assertTrue(self.throttle.refuses_address(address_key("192.0.2.1")))

    def test_zero_disables(self) -> None:
        self.config.replace_db_rows([(-1, "l7r.auth.throttle.max_failures", "0")])
        self.fail(50, "192.0.2.1", "alice")
        self.assertFalse(self.refuses("192.0.2.1", "alice"))
        self.assertEqual(len(self.throttle.table), 0)

    def test_ipv6_clients_are_throttled_by_their_64(self) -> None:
        self.assertEqual(address_key("2001:db8:1:2:aaaa::1"), address_key("2001:db8:1:2::ffff"))
        self.assertNotEqual(address_key("2001:db8:1:2::1"), address_key("2001:db8:1:3::1"))
        self.assertEqual(address_key("/run/qvd.sock"), "address /run/qvd.sock")
        self.assertEqual(address_key("2001:db8:1:2::7"), "address 2001:db8:1:2::/64")