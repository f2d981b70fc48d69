"""The ``auto`` plugin behind ``ldap`` (``l7r.auth.plugins = auto,ldap``): real QVD-DB and slapd."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from zope.interface.verify import verifyObject

from qvd.l7r.auth import (
    AuthError, AuthPluginFactory, AuthServices, IAuthPlugin, IAuthPluginFactory,
)
from qvd.l7r.auth.auto import AutoPlugin, auto
from qvd.l7r.auth.default import default
from qvd.l7r.auth.ldap import LdapPlugin
from tests.l7r.test_auth import PEER, AuthTestCase, basic, refused
from tests.support import slapd

DEFAULT_TENANT = 1


class AutoTests(AuthTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.osf = self.insert("INSERT INTO osfs (tenant_id, name, memory, use_overlay)"
                               " VALUES (%s, 'desk', 256, FALSE) RETURNING id", (DEFAULT_TENANT,))
        for key, value in (("l7r.auth.plugins", "auto,ldap"),
                           ("auth.ldap.host", slapd.shared().url),
                           ("auth.ldap.base", slapd.BASE),
                           ("auth.auto.osf_id", str(self.osf))):
            self.set_config(-1, key, value)

    def plugins(self) -> list[Any]:
        def ldap_plugin(services: Any) -> LdapPlugin:
            plugin = LdapPlugin(services)
            self.addCleanup(plugin.close)
            return plugin

        return [auto, default, AuthPluginFactory("ldap", ldap_plugin)]

    @defer.inlineCallbacks
    def authenticate(self, login: str, password: str, authenticator: Any = None,
                     extra: str = "") -> Generator[Any, Any, Any]:
        if authenticator is None:
            authenticator = yield self.authenticator(extra, plugins=self.plugins())
        return (yield authenticator.for_connection(PEER).authenticate(basic(login, password)))

    def vms_of(self, login: str) -> list[tuple]:
        return self.db.query(
            "SELECT v.name, v.osf_id, v.di_tag, v.ip, r.vm_state, r.user_state, r.blocked,"
            " (SELECT count(*) FROM vm_counters c WHERE c.vm_id = v.id)"
            " FROM vms v JOIN users u ON u.id = v.user_id LEFT JOIN vm_runtimes r ON r.vm_id = v.id"
            " WHERE u.login = %s ORDER BY v.id", (login,))

    def other_osf(self) -> int:
        return self.db.query("SELECT id FROM osfs WHERE name = 'osf'")[0][0]

    def users_called(self, login: str) -> list[tuple]:
        return self.db.query("SELECT id, tenant_id, password, blocked FROM users WHERE login = %s",
                             (login,))

    def test_the_plugin_provides_the_interfaces(self) -> None:
        self.assertTrue(verifyObject(IAuthPluginFactory, auto))
        services = AuthServices(self.db.config(), None, self.clock)  # type: ignore[arg-type]
        self.assertTrue(verifyObject(IAuthPlugin, AutoPlugin(services)))

    @defer.inlineCallbacks
    def test_a_first_login_creates_the_user_and_one_vm(self):
        self.assertEqual(self.users_called("carol"), [])
        auth = yield self.authenticate("carol", "carol-pw")
        [(user_id, tenant_id, password, blocked)] = self.users_called("carol")
        self.assertEqual((auth.user_id, tenant_id, password, blocked),
                         (user_id, DEFAULT_TENANT, None, False))
        self.assertEqual(self.vms_of("carol"), [
            ("carol-1", self.osf, "default", "10.0.255.254", "stopped", "disconnected", False, 1)])
        self.assertEqual(auth.params["qvd.vm.user.uid"], "10003")
        again = yield self.authenticate("carol", "carol-pw")
        self.assertEqual(again.user_id, user_id)
        self.assertEqual(len(self.vms_of("carol")), 1, "a second login creates nothing")
        yield refused(self.authenticate("carol", "wrong"))
        yield refused(self.authenticate("nobody", "x"))
        self.assertEqual(self.users_called("nobody"), [])

    @defer.inlineCallbacks
    def test_di_tag_name_collisions_and_an_existing_user(self):
        self.set_config(DEFAULT_TENANT, "auth.auto.di_tag", "prueba")
        self.vm(self.alice, "erin-1")  # a VM of another tenant (alice's): no collision
        other = self.user(DEFAULT_TENANT, "someone", None)
        self.insert("INSERT INTO vms (name, user_id, osf_id, di_tag, ip) VALUES"
                    " ('erin-2', %s, %s, 'default', '10.0.255.254') RETURNING id",
                    (other, self.osf))
        self.vm(self.dave, "dave-old")
        yield self.authenticate("erin", "erin-pw")
        self.assertEqual([vm[:4] for vm in self.vms_of("erin")],
                         [("erin-1", self.osf, "prueba", "10.0.255.253")])
        # dave exists (with a VM of another OSF): he gets one of this OSF, once
        yield self.authenticate("dave", "dave-pw")
        yield self.authenticate("dave", "dave-pw")
        self.assertEqual([vm[:2] for vm in self.vms_of("dave")],
                         [("dave-old", self.other_osf()), ("dave-1", self.osf)])

    @defer.inlineCallbacks
    def test_names_used_up_create_nothing(self):
        self.set_config(DEFAULT_TENANT, "auth.auto.max_vms", "1")
        other = self.user(DEFAULT_TENANT, "someone", None)
        self.insert("INSERT INTO vms (name, user_id, osf_id, di_tag) VALUES"
                    " ('carol-1', %s, %s, 'default') RETURNING id", (other, self.osf))
        error = yield refused(self.authenticate("carol", "carol-pw"), AuthError)
        self.assertIn("too many VM name collisions", str(error))
        self.assertEqual(self.users_called("carol"), [], "the whole provisioning rolled back")

    @defer.inlineCallbacks
    def test_the_osf_must_belong_to_the_logins_tenant(self):
        acme_osf = self.insert("INSERT INTO osfs (tenant_id, name, memory, use_overlay)"
                               " VALUES (%s, 'theirs', 256, FALSE) RETURNING id", (self.acme,))
        self.set_config(DEFAULT_TENANT, "auth.auto.osf_id", str(acme_osf))
        error = yield refused(self.authenticate("carol", "carol-pw"), AuthError)
        self.assertIn("belongs to another tenant", str(error))
        self.assertEqual(self.users_called("carol"), [])

    @defer.inlineCallbacks
    def test_without_an_osf_the_login_is_an_internal_error(self):
        self.db.query("DELETE FROM configs WHERE key = 'auth.auto.osf_id'")
        error = yield refused(self.authenticate("carol", "carol-pw"), AuthError)
        self.assertIn("auth.auto.osf_id", str(error))

    @defer.inlineCallbacks
    def test_simultaneous_first_logins_create_one_user_and_one_vm(self):
        authenticator = yield self.authenticator("internal.database.pool.size = 4\n",
                                                 plugins=self.plugins())
        logins = [self.authenticate(name, f"{name}-pw", authenticator)
                  for name in ("carol", "erin", "dave") * 4]
        results = yield defer.gatherResults(logins, consumeErrors=True)
        for name in ("carol", "erin", "dave"):
            [(user_id, *_)] = self.users_called(name)
            self.assertEqual({a.user_id for a in results if a.login == name}, {user_id})
            self.assertEqual(len([vm for vm in self.vms_of(name) if vm[1] == self.osf]), 1, name)
        addresses = [vm[3] for name in ("carol", "erin", "dave") for vm in self.vms_of(name)]
        self.assertEqual(sorted(addresses), ["10.0.255.252", "10.0.255.253", "10.0.255.254"])
