"""The ``ldap`` plugin against a real slapd: every row of QVD 4's algorithm and every key.

The directory is ``tests.support.slapd``'s (people in ou=People and ou=Staff,
a service account, nested groups, an alias, AD-style naming attributes).
Tests that stop or pause a directory start one of their own.
"""

from __future__ import annotations

import os
import time
from typing import Any, Generator

import psutil
from twisted.internet import defer, reactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from qvd.config import Config, parse_properties
from qvd.l7r.auth.interface import Auth, AuthError, AuthServices, IAuthPlugin, IAuthPluginFactory
from qvd.l7r.auth.ldap import LdapPlugin, ldap
from qvd.ldap.escape import escape_dn_value, escape_filter_value
from tests.support import slapd
from tests.support.slapd import BASE, GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD


KEY_NAMES = {"racf_allowregex": "racf_allowregex"}  # the one key with an underscore


def make_plugin(testcase: unittest.TestCase, **keys: Any) -> LdapPlugin:
    """An ``ldap`` plugin on a configuration of ``auth.ldap.<key> = value`` lines
    (``host`` defaults to the shared directory, ``base`` to its root)."""
    keys.setdefault("host", slapd.shared().url)
    keys.setdefault("base", BASE)
    text = "".join(f"auth.ldap.{KEY_NAMES.get(k, k.replace('_', '.'))} = {v}\n"
                   for k, v in keys.items() if not k.startswith("model"))
    if keys.get("model_case_sensitive"):
        text += "model.user.login.case-sensitive = 1\n"
    config = Config(parse_properties(text))
    plugin = LdapPlugin(AuthServices(config, None, reactor))  # type: ignore[arg-type]
    testcase.addCleanup(plugin.close)
    return plugin


@defer.inlineCallbacks
def login(plugin: LdapPlugin, name: str, password: str) -> Generator[Any, Any, tuple[bool, Auth]]:
    auth = Auth(peer="192.0.2.1", tenant_id=1, tenant="default", login=name)
    ok = yield plugin.authenticate_basic(auth, name, password)
    return ok, auth


class EscapingTests(unittest.TestCase):
    def test_filter_values_follow_rfc_4515(self) -> None:
        self.assertEqual(escape_filter_value("a*(b)\\c\x00"), "a\\2a\\28b\\29\\5cc\\00")
        self.assertEqual(escape_filter_value("josé"), "josé")

    def test_dn_values_follow_rfc_4514(self) -> None:
        self.assertEqual(escape_dn_value('a,b+c"d\\e<f>g;h=i'),
                         'a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i')
        self.assertEqual(escape_dn_value(" #x "), "\\ #x\\20")
        self.assertEqual(escape_dn_value("#x"), "\\#x")
        self.assertEqual(escape_dn_value("a\nb"), "a\\0ab")


class AlgorithmTests(unittest.TestCase):
    """Reference §3, row by row, on the shared directory."""

    def test_the_plugin_provides_the_interfaces(self) -> None:
        self.assertTrue(verifyObject(IAuthPluginFactory, ldap))
        self.assertTrue(verifyObject(IAuthPlugin, make_plugin(self)))

    @defer.inlineCallbacks
    def test_anonymous_search_then_bind_exports_the_entry(self):
        plugin = make_plugin(self)
        ok, auth = yield login(plugin, "alice", "alice-pw")
        self.assertTrue(ok)
        self.assertEqual(auth.params, {
            "qvd.vm.user.uid": "10001", "qvd.vm.user.gid": "10001",
            "qvd.vm.user.ldap.name": "alice", "qvd.vm.user.ldap.home": "/home/alice"})
        self.assertEqual(auth.login, "alice")
        for name, password in (("alice", "wrong"), ("nobody", "alice-pw"), ("alice", "")):
            ok, auth = yield login(plugin, name, password)
            self.assertFalse(ok, (name, password))
            self.assertEqual(auth.params, {})

    @defer.inlineCallbacks
    def test_service_account(self):
        ok, _ = yield login(make_plugin(self, binddn=SERVICE_DN, bindpass=SERVICE_PASSWORD),
                            "carol", "carol-pw")
        self.assertTrue(ok)
        ok, _ = yield login(make_plugin(self, binddn=SERVICE_DN, bindpass="wrong"),
                            "carol", "carol-pw")
        self.assertFalse(ok)

    @defer.inlineCallbacks
    def test_binddn_without_bindpass_binds_with_the_users_password(self):
        plugin = make_plugin(self, binddn=f"uid=%u,{PEOPLE}")
        self.assertTrue((yield login(plugin, "dave", "dave-pw"))[0])
        self.assertFalse((yield login(plugin, "dave", "carol-pw"))[0])

    @defer.inlineCallbacks
    def test_userbindpattern_binds_directly_then_falls_back_to_the_search(self):
        plugin = make_plugin(self, userbindpattern=f"uid=%u,{PEOPLE}", base=BASE)
        ok, auth = yield login(plugin, "alice", "alice-pw")
        self.assertTrue(ok)
        self.assertEqual(auth.params, {}, "a direct bind exports nothing (as QVD 4)")
        ok, auth = yield login(plugin, "erin", "erin-pw")  # not in ou=People: found by the search
        self.assertTrue(ok)
        self.assertEqual(auth.params["qvd.vm.user.uid"], "10005")
        self.assertFalse((yield login(plugin, "alice", "wrong"))[0])
        self.assertFalse((yield login(plugin, "nobody", "x"))[0])

    @defer.inlineCallbacks
    def test_scope(self):
        for scope, ok in (("base", False), ("one", False), ("sub", True)):
            plugin = make_plugin(self, scope=scope)
            self.assertEqual((yield login(plugin, "alice", "alice-pw"))[0], ok, scope)
        self.assertTrue((yield login(make_plugin(self, base=PEOPLE, scope="one"),
                                     "alice", "alice-pw"))[0])
        self.assertTrue((yield login(make_plugin(self), "alice", "alice-pw"))[0],
                        "the default scope is sub")

    @defer.inlineCallbacks
    def test_deref(self):
        aliases = f"ou=Aliases,{BASE}"
        self.assertFalse((yield login(make_plugin(self, base=aliases), "frank", "frank-pw"))[0])
        for deref in ("search", "always"):
            plugin = make_plugin(self, base=aliases, deref=deref)
            self.assertTrue((yield login(plugin, "frank", "frank-pw"))[0], deref)

    @defer.inlineCallbacks
    def test_wrong_base_and_several_entries_fail(self):
        self.assertFalse((yield login(make_plugin(self, base=f"o=1111,{BASE}"),
                                      "alice", "alice-pw"))[0])
        self.assertFalse((yield login(make_plugin(self), "twin", "twin-pw"))[0])
        self.assertTrue((yield login(make_plugin(self, base=PEOPLE), "twin", "twin-pw"))[0])

    @defer.inlineCallbacks
    def test_racf_allowregex(self):
        ok, auth = yield login(make_plugin(self, racf_allowregex=".*"), "alice", "wrong")
        self.assertTrue(ok, "QVD 4 accepts a failed bind whose message matches")
        self.assertEqual(auth.params["qvd.auth.ldap.racf_detailed_error"], "")
        ok, _ = yield login(make_plugin(self, racf_allowregex="^R004109"), "alice", "wrong")
        self.assertFalse(ok)
        ok, _ = yield login(make_plugin(self, racf_allowregex=".*"), "alice", "")
        self.assertFalse(ok, "an empty password is refused before any bind")

    @defer.inlineCallbacks
    def test_home_set(self):
        _, auth = yield login(make_plugin(self), "alice", "alice-pw")
        self.assertNotIn("qvd.vm.user.home", auth.params)
        _, auth = yield login(make_plugin(self, home_set=1), "alice", "alice-pw")
        self.assertEqual(auth.params["qvd.vm.user.home"], "/home/alice")

    @defer.inlineCallbacks
    def test_name_normalisation(self):
        for key in ("name_normalize", "normalize_name"):
            ok, auth = yield login(make_plugin(self, **{key: 1}), "GRACE", "grace-pw")
            self.assertTrue(ok)
            self.assertEqual(auth.login, "grace", "the entry's uid, folded like logins")
        ok, auth = yield login(make_plugin(self, name_normalize=1, model_case_sensitive=1),
                               "grace", "grace-pw")
        self.assertEqual((ok, auth.login), (True, "Grace"))
        ok, auth = yield login(make_plugin(self), "GRACE", "grace-pw")
        self.assertEqual(auth.login, "GRACE", "no normalisation unless asked")

    @defer.inlineCallbacks
    def test_active_directory_logins(self):
        """``DOMAIN\\user`` and ``user@domain`` as the manual's AD set-up receives them."""
        plugin = make_plugin(self, binddn=SERVICE_DN, bindpass=SERVICE_PASSWORD,
                             filter="(|(sAMAccountName=%n)(userPrincipalName=%u))",
                             name_normalize=1, name_attribute="sAMAccountName")
        for name in ("EXAMPLE\\bob", "bob@example.com", "bob"):
            ok, auth = yield login(plugin, name, "bob-pw")
            self.assertTrue(ok, name)
            self.assertEqual(auth.login, "bob", name)
        self.assertFalse((yield login(plugin, "EXAMPLE\\alice", "alice-pw"))[0],
                         "alice has no sAMAccountName")
        plugin = make_plugin(self, filter="(sAMAccountName=%u)")
        self.assertTrue((yield login(plugin, "bob", "bob-pw"))[0])

    @defer.inlineCallbacks
    def test_injection_matches_nobody(self):
        plugins = [make_plugin(self), make_plugin(self, filter="(|(uid=%u)(cn=%u))"),
                   make_plugin(self, userbindpattern=f"uid=%u,{PEOPLE}", base=PEOPLE,
                               scope="base")]
        attempts = ["*", "a*", "*)(uid=*", ")(uid=*", "alice)(|(uid=*", "alice\x00",
                    "\x00", "alice,ou=People", f"alice,{PEOPLE}", "uid=alice", "alice+cn=x",
                    "alice\\", "#alice"]
        for plugin in plugins:
            for name in attempts:
                for password in ("alice-pw", "*"):
                    ok, _ = yield login(plugin, name, password)
                    self.assertFalse(ok, f"{name!r}/{password!r} got in")


class GroupTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_direct_group_membership(self):
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}")
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        self.assertFalse((yield login(plugin, "erin", "erin-pw"))[0], "only a nested member")
        self.assertFalse((yield login(plugin, "bob", "bob-pw"))[0])

    @defer.inlineCallbacks
    def test_nested_group_membership(self):
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}", group_nested=1)
        for name in ("alice", "erin"):
            self.assertTrue((yield login(plugin, name, f"{name}-pw"))[0], name)
        self.assertFalse((yield login(plugin, "bob", "bob-pw"))[0])
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}", group_nested=1, group_depth=1)
        self.assertFalse((yield login(plugin, "erin", "erin-pw"))[0], "beyond the depth")
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}", group_nested=1, group_base=BASE)
        self.assertTrue((yield login(plugin, "erin", "erin-pw"))[0], "groups below the base")
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}", group_nested=1,
                             group_base=PEOPLE)
        self.assertFalse((yield login(plugin, "erin", "erin-pw"))[0], "no groups there")

    @defer.inlineCallbacks
    def test_group_with_a_direct_bind(self):
        plugin = make_plugin(self, group=f"cn=desktop,{GROUPS}",
                             userbindpattern=f"uid=%u,{PEOPLE}")
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        self.assertFalse((yield login(plugin, "carol", "carol-pw"))[0])


class TransportTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_every_host_form(self):
        server = slapd.shared()
        forms = [f"127.0.0.1:{server.port}", server.url, server.ldapi_url,
                 f"ldap://localhost:{server.port}/"]
        for host in forms:
            self.assertTrue((yield login(make_plugin(self, host=host), "alice", "alice-pw"))[0],
                            host)

    @defer.inlineCallbacks
    def test_ldaps_and_starttls_verify_the_certificate(self):
        server = slapd.shared()
        ok = yield login(make_plugin(self, host=server.ldaps_url, tls_ca=server.ca_path),
                         "alice", "alice-pw")
        self.assertTrue(ok[0])
        ok = yield login(make_plugin(self, host=server.ldaps_url), "alice", "alice-pw")
        self.assertFalse(ok[0], "a server the system's CAs do not know is refused")
        ok = yield login(make_plugin(self, host=server.ldaps_url, tls_verify=0),
                         "alice", "alice-pw")
        self.assertTrue(ok[0])
        plain = f"ldap://localhost:{server.port}"
        ok = yield login(make_plugin(self, host=plain, starttls=1, tls_ca=server.ca_path),
                         "alice", "alice-pw")
        self.assertTrue(ok[0])
        ok = yield login(make_plugin(self, host=plain, starttls=1), "alice", "alice-pw")
        self.assertFalse(ok[0])

    @defer.inlineCallbacks
    def test_fail_over_to_the_second_server(self):
        hosts = f"127.0.0.1:{slapd.dead_port()}, {slapd.shared().url}"
        plugin = make_plugin(self, host=hosts)
        for _ in range(3):
            self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])

    @defer.inlineCallbacks
    def test_a_stopped_directory_fails_promptly(self):
        own = slapd.started(self)
        plugin = make_plugin(self, host=own.url, timeout_connect=2, timeout=2)
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        own.stop()
        started = time.monotonic()
        with capturedLogs() as events:
            self.assertFalse((yield login(plugin, "alice", "alice-pw"))[0])
        self.assertLess(time.monotonic() - started, 2)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertTrue(any("directory unavailable" in w for w in warnings), warnings)

    @defer.inlineCallbacks
    def test_a_hung_directory_times_out_then_the_next_server_answers(self):
        own = slapd.started(self)
        plugin = make_plugin(self, host=f"{own.url} {slapd.shared().url}",
                             timeout_connect=1, timeout=1)
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        own.pause()  # connections are still accepted; nothing is answered
        self.addCleanup(own.resume)
        started = time.monotonic()
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        self.assertLess(time.monotonic() - started, 4)
        started = time.monotonic()
        self.assertTrue((yield login(plugin, "alice", "alice-pw"))[0])
        self.assertLess(time.monotonic() - started, 0.5, "the hung server is skipped now")
        alone = make_plugin(self, host=own.url, timeout_connect=1, timeout=1)
        started = time.monotonic()
        self.assertFalse((yield login(alone, "alice", "alice-pw"))[0])
        self.assertLess(time.monotonic() - started, 4)

    @defer.inlineCallbacks
    def test_connections_are_reused(self):
        server = slapd.shared()
        plugin = make_plugin(self, binddn=SERVICE_DN, bindpass=SERVICE_PASSWORD, threads=2)
        logins = [login(plugin, name, f"{name}-pw") for name in ("alice", "carol", "dave") * 6]
        results = yield defer.gatherResults(logins)
        self.assertTrue(all(ok for ok, _ in results))
        mine = [c for c in psutil.Process(os.getpid()).net_connections("tcp")
                if c.raddr and c.raddr.port == server.port and c.status == "ESTABLISHED"]
        self.assertLessEqual(len(mine), 4, "two threads, a searcher and a checker each")

    @defer.inlineCallbacks
    def test_missing_mandatory_keys_are_configuration_errors(self):
        config = Config(parse_properties("auth.ldap.base = dc=x\n"))
        plugin = LdapPlugin(AuthServices(config, None, reactor))  # type: ignore[arg-type]
        self.addCleanup(plugin.close)
        with self.assertRaises(AuthError):
            yield login(plugin, "alice", "alice-pw")
        with self.assertRaises(AuthError):
            yield login(make_plugin(self, scope="subtree"), "alice", "alice-pw")
