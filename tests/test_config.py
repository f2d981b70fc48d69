"""node.conf parsing, built-in defaults and the layered lookup of qvd.config."""

from __future__ import annotations

import os
import re

from twisted.trial import unittest

from qvd.config import Config, ConfigError, MissingKeyError, builtin_defaults, parse_properties

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference",
                         "qvd4-db-auth-lb.md")


class PropertiesSyntaxTests(unittest.TestCase):
    def test_separators_comments_and_last_value_wins(self):
        text = "a=1\nb : 2\nc 3\n  # comment\n! also a comment\nd = spaced value  \na = 4\n"
        self.assertEqual(parse_properties(text), {"a": "4", "b": "2", "c": "3", "d": "spaced value  "})

    def test_escapes_and_continuation(self):
        text = "sep = @\\#\nslash = a\\\\b\nlong = one \\\n      two\nuni = \\u00e9t\\u00e9\ntab=a\\tb\n"
        self.assertEqual(parse_properties(text), {
            "sep": "@#", "slash": "a\\b", "long": "one two", "uni": "été", "tab": "a\tb"})

    def test_even_backslashes_do_not_continue(self):
        self.assertEqual(parse_properties("a = x\\\\\nb = y\n"), {"a": "x\\", "b": "y"})

    def test_line_without_key_is_an_error_naming_the_line(self):
        with self.assertRaisesRegex(ConfigError, r"node.conf:2: line has no key"):
            parse_properties("a=1\n= orphan\n", "node.conf")

    def test_bad_unicode_escape(self):
        with self.assertRaisesRegex(ConfigError, r"x.conf:1: bad unicode escape"):
            parse_properties("a = \\uZZZZ\n", "x.conf")


class DefaultsTests(unittest.TestCase):
    def test_defaults_of_the_reference(self):
        config = Config({})
        self.assertEqual(config.get("l7r.port"), "8443")
        self.assertEqual(config.get("l7r.auth.plugin.default.separators"), "@#")
        self.assertEqual(config.get("path.l7r.ssl.key"), "/var/run/qvd/l7r/ssl/key.pem")
        self.assertEqual(config.get("internal.hkd.agent.ticker.delay"), "120")
        self.assertEqual(config.get("vm.network.ip.start"), "10.0.0.100")
        self.assertEqual(config.get("database.user"), "qvd")
        self.assertEqual(config.get("l7r.options.SSL_version"), "TLSv1_2:!SSLv3:!SSLv2:!TLSv1")

    def test_every_default_in_the_reference_table(self):
        """Each row of reference §6.3 has the same value in qvd/defaults.conf."""
        if not os.path.exists(REFERENCE):
            raise unittest.SkipTest("shared/reference is not beside this checkout")
        with open(REFERENCE, encoding="utf-8") as f:
            text = f.read()
        section = text[text.index("### 6.3 Defaults"):text.index("## 7. Quirks")]
        defaults = builtin_defaults()
        checked = 0
        for key, value in re.findall(r"^\| `([^`]+)` \| ([^|]*?) \|", section, re.M):
            if value.startswith("`"):
                expected = value.strip("`")
            elif value == "(empty)":
                expected = ""
            else:
                continue  # no default in the file (mandatory keys, the k8s template)
            self.assertEqual(defaults.get(key), expected, key)
            checked += 1
        self.assertGreater(checked, 200)


class LookupTests(unittest.TestCase):
    def setUp(self):
        self.config = Config({
            "nodename": "node1",
            "database.name": "from_file",
            "l7r.port": "9443",
            "auth.ldap.host": "ldap://file",
            "greeting": "hello ${nodename} on ${l7r.port}",
        })

    def test_file_overrides_defaults_and_expands_references(self):
        self.assertEqual(self.config.get_int("l7r.port"), 9443)
        self.assertEqual(self.config.get("greeting"), "hello node1 on 9443")
        self.assertEqual(self.config.get("path.storage.images"), "/var/lib/qvd/storage/images")

    def test_global_db_rows_override_the_file_but_not_file_only_keys(self):
        self.config.replace_db_rows([
            (-1, "l7r.port", "10443"), (-1, "database.name", "hijacked"),
            (-1, "nodename", "other"), (-1, "log.level", "DEBUG")])
        self.assertEqual(self.config.get("l7r.port"), "10443")
        self.assertEqual(self.config.get("greeting"), "hello node1 on 10443")
        self.assertEqual(self.config.get("database.name"), "from_file")
        self.assertEqual(self.config.get("nodename"), "node1")
        self.assertEqual(self.config.get("log.level"), "INFO")

    def test_per_tenant_keys_look_at_the_tenant_first(self):
        self.config.replace_db_rows([
            (5, "auth.ldap.host", "ldap://tenant5"), (-1, "auth.ldap.base", "dc=global"),
            (5, "l7r.port", "1"), (5, "model.user.login.case-sensitive", "1")])
        self.assertEqual(self.config.get("auth.ldap.host", 5), "ldap://tenant5")
        self.assertEqual(self.config.get("auth.ldap.host", 6), "ldap://file")
        self.assertEqual(self.config.get("auth.ldap.base", 5), "dc=global")
        self.assertEqual(self.config.get("l7r.port", 5), "9443", "l7r.port is global only")
        self.assertTrue(self.config.get_bool("model.user.login.case-sensitive", 5))
        self.assertFalse(self.config.get_bool("model.user.login.case-sensitive", 6))

    def test_ssl_keys_come_from_ssl_configs_only(self):
        self.config.replace_db_rows([(-1, "l7r.ssl.cert", "not here")], [("l7r.ssl.cert", "PEM")])
        self.assertEqual(self.config.get("l7r.ssl.cert"), "PEM")
        with self.assertRaises(MissingKeyError):
            self.config.get("l7r.ssl.key")
        with self.assertRaisesRegex(ConfigError, "global"):
            self.config.get("l7r.ssl.cert", 3)

    def test_missing_mandatory_key_is_named(self):
        with self.assertRaises(MissingKeyError) as caught:
            self.config.get("database.password")
        self.assertIn("'database.password'", str(caught.exception))
        self.assertEqual(self.config.get("database.password", default="x"), "x")

    def test_missing_reference_names_both_keys(self):
        config = Config({"a": "${b}"})
        with self.assertRaisesRegex(MissingKeyError, r"'b' \(referenced by 'a'\)"):
            config.get("a")

    def test_reference_cycle_is_an_error(self):
        config = Config({"a": "${b}", "b": "x${a}"})
        with self.assertRaisesRegex(ConfigError, "refers to itself"):
            config.get("a")

    def test_typed_getters_reject_bad_values(self):
        config = Config({"n": "twelve", "flag": "maybe", "f": "1.5", "items": " a, b,,c "})
        with self.assertRaisesRegex(ConfigError, "'n' must be an integer, not 'twelve'"):
            config.get_int("n")
        with self.assertRaisesRegex(ConfigError, "'flag' must be 0 or 1"):
            config.get_bool("flag")
        self.assertEqual(config.get_float("f"), 1.5)
        self.assertEqual(config.get_list("items"), ["a", "b", "c"])
        self.assertEqual(config.get_list("l7r.auth.plugins.tail"), ["default"])

    def test_observers_hear_every_reload(self):
        seen = []
        self.config.add_observer(lambda c: seen.append(c.get("l7r.port")))
        self.config.replace_db_rows([(-1, "l7r.port", "1")])
        self.config.replace_db_rows([])
        self.assertEqual(seen, ["1", "9443"])


class LoadTests(unittest.TestCase):
    def test_explicit_missing_file_is_an_error(self):
        with self.assertRaisesRegex(ConfigError, "cannot read configuration file /nonexistent"):
            Config.load("/nonexistent/node.conf")

    def test_environment_names_the_file(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nodename = from-env\n")
        self.patch(os, "environ", {**os.environ, "QVD_CONFIG": path})
        self.assertEqual(Config.load().get("nodename"), "from-env")
