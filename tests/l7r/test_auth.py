"""The L7R authentication chain against a real QVD-DB (reference §2, with our fixes)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Generator, Iterable, Optional

from twisted.internet import defer, task
from twisted.trial import unittest

from qvd.db.pool import Database
from qvd.db.configs import load_configs
from qvd.http.head import Headers
from qvd.l7r.auth import (
    Auth, AuthError, AuthPlugin, AuthPluginFactory, Authenticator, IAuthPluginFactory,
    PluginError, Throttled, Unauthorized, create_token, store_auth_params, token_header_value,
)
from qvd.l7r.auth.default import default
from qvd.passwords import qvd_hash
from tests.support.postgres import drop_database, new_database
from tests.support.plugins import install_plugin

if TYPE_CHECKING:  # not imported at run time: pytest would try to collect it
    from tests.support.postgres import TestDatabase

SALT = "qvd1234"
PEER = "192.0.2.10"


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def basic(login: str, password: str, *extra: tuple[str, str]) -> Headers:
    return Headers([("Authorization", "Basic " + b64(f"{login}:{password}")), *extra])


def bearer(token: str) -> Headers:
    return Headers([("Authorization", "Bearer " + token_header_value(token))])


@defer.inlineCallbacks
def refused(
    d: defer.Deferred[Any], kind: type = Unauthorized, what: object = ""
) -> Generator[Any, Any, Exception]:
    """The exception ``d`` fails with, which must be a ``kind``."""
    try:
        yield d
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__name__} {what}")


class Probe(AuthPlugin):
    """Records every hook call in a shared list; behaviour set per test."""

    def __init__(self, services: Any, name: str, calls: list[tuple[str, str]],
                 **behaviour: Any):
        super().__init__(services)
        self.name = name
        self.calls = calls
        self.behaviour = behaviour

    def _record(self, hook: str) -> Any:
        self.calls.append((self.name, hook))
        answer = self.behaviour.get(hook)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def normalize_login(self, auth: Auth, login: str) -> Optional[str]:
        self._record("normalize_login")
        return login

    def split_second_factor(self, auth: Auth, password: str) -> Optional[tuple[str, str]]:
        self._record("split_second_factor")
        size = self.behaviour.get("second_factor_size")
        return (password[:-size], password[-size:]) if size else None

    def authenticate_basic(self, auth: Auth, login: str, password: str) -> Any:
        return self._record("authenticate_basic") or password == self.behaviour.get("password")

    def authenticate_second_factor(self, auth: Auth, login: str, token: str) -> bool:
        self._record("authenticate_second_factor")
        return token == self.behaviour.get("token")

    def after_authenticate_basic(self, auth: Auth, login: str) -> None:
        self._record("after_authenticate_basic")

    def before_list_of_vms(self, auth: Auth) -> Any:
        return self._record("before_list_of_vms")

    def list_of_vm(self, auth: Auth, is_application: bool) -> Any:
        return self._record("list_of_vm")

    def before_connect_to_vm(self, auth: Auth) -> Any:
        return self._record("before_connect_to_vm")


def probe(name: str, calls: list[tuple[str, str]], **behaviour: Any) -> AuthPluginFactory:
    return AuthPluginFactory(name, lambda services: Probe(services, name, calls, **behaviour))


class AuthTestCase(unittest.TestCase):
    """A fresh QVD-DB with a host, tenant ``acme`` and a few users."""

    def setUp(self) -> None:
        self.db: TestDatabase = new_database()
        self.addCleanup(drop_database, self.db)
        self.host_id = self.insert(
            "INSERT INTO hosts (name, address, frontend, backend)"
            " VALUES ('test-node', '10.0.0.1', TRUE, TRUE) RETURNING id")
        self.db.query("INSERT INTO host_counters (host_id) VALUES (%s)", (self.host_id,))
        self.acme = self.tenant("acme")
        self.alice = self.user(self.acme, "alice", "s3cret")
        self.dave = self.user(1, "dave", "d4ve")
        self.clock = task.Clock()

    def insert(self, sql: str, params: tuple = ()) -> int:
        return self.db.query(sql, params)[0][0]

    def tenant(self, name: str, blocked: bool = False) -> int:
        return self.insert("INSERT INTO tenants (name, blocked) VALUES (%s, %s) RETURNING id",
                           (name, blocked))

    def user(self, tenant_id: int, login: str, password: Optional[str],
             blocked: bool = False, salt: str = SALT) -> int:
        return self.insert(
            "INSERT INTO users (tenant_id, login, password, blocked) VALUES (%s, %s, %s, %s)"
            " RETURNING id", (tenant_id, login, password and qvd_hash(password, salt), blocked))

    def vm(self, user_id: int, name: str) -> int:
        osf = self.db.query("SELECT id FROM osfs WHERE name = 'osf'")
        osf_id = osf[0][0] if osf else self.insert(
            "INSERT INTO osfs (tenant_id, name, memory, use_overlay)"
            " VALUES (%s, 'osf', 256, FALSE) RETURNING id", (self.acme,))
        return self.insert("INSERT INTO vms (name, user_id, osf_id, di_tag)"
                           " VALUES (%s, %s, %s, 'default') RETURNING id", (name, user_id, osf_id))

    def set_config(self, tenant_id: int, key: str, value: str) -> None:
        self.db.query("INSERT INTO configs (tenant_id, key, value) VALUES (%s, %s, %s)",
                      (tenant_id, key, value))

    def counters(self) -> tuple[int, int]:
        return self.db.query("SELECT auth_attempts, auth_ok FROM host_counters WHERE host_id = %s",
                             (self.host_id,))[0]

    @defer.inlineCallbacks
    def authenticator(
        self, extra: str = "", plugins: Optional[Iterable[IAuthPluginFactory]] = None,
    ) -> Generator[Any, Any, Authenticator]:
        """An Authenticator on this test's clock, with the configs rows loaded."""
        config = self.db.config(extra)
        database = Database(config, "qvd-test-auth")
        self.addCleanup(database.close)
        yield database.start()
        config.replace_db_rows(*(yield load_configs(database)))
        self.database = database
        authenticator = Authenticator(config, database, self.host_id, clock=self.clock,
                                      plugins=plugins)
        self.addCleanup(authenticator.close)
        return authenticator

    @defer.inlineCallbacks
    def login(self, headers: Headers, extra: str = "", peer: str = PEER,
              **kwargs: Any) -> Generator[Any, Any, Auth]:
        authenticator = yield self.authenticator(extra, **kwargs)
        return (yield authenticator.for_connection(peer).authenticate(headers))


class BasicTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_user_at_tenant_user_hash_tenant_and_default_tenant(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        for login, user_id, tenant_id in (("alice@acme", self.alice, self.acme),
                                          ("alice#acme", self.alice, self.acme),
                                          ("dave", self.dave, 1)):
            password = "s3cret" if user_id == self.alice else "d4ve"
            auth = yield authenticator.for_connection(PEER).authenticate(basic(login, password))
            self.assertEqual((auth.user_id, auth.tenant_id, auth.peer), (user_id, tenant_id, PEER))
            self.assertEqual(auth.params, {"qvd.vm.user.name": auth.login})
            self.assertIsNone(auth.vm_id)
        self.assertEqual(self.counters(), (3, 3))

    @defer.inlineCallbacks
    def test_first_separator_splits_login_and_tenant(self) -> Generator[Any, Any, None]:
        odd = self.tenant("b@c")
        user_id = self.user(odd, "a", "pw")
        auth = yield self.login(basic("a@b@c", "pw"))
        self.assertEqual((auth.user_id, auth.login, auth.tenant), (user_id, "a", "b@c"))

    @defer.inlineCallbacks
    def test_default_tenant_and_separators_come_from_the_config(self) -> Generator[Any, Any, None]:
        auth = yield self.login(basic("alice", "s3cret"),
                                "l7r.auth.plugin.default.tenant = acme\n")
        self.assertEqual(auth.user_id, self.alice)
        self.assertEqual((yield self.login(basic("alice%acme", "s3cret"),
                                           "l7r.auth.plugin.default.separators = %\n")).user_id,
                         self.alice)

    @defer.inlineCallbacks
    def test_tenant_and_login_are_trimmed_and_lower_cased(self) -> Generator[Any, Any, None]:
        auth = yield self.login(basic(" Alice @ ACME ", "s3cret"))
        self.assertEqual((auth.user_id, auth.login, auth.tenant), (self.alice, "alice", "acme"))
        self.assertEqual(auth.params["qvd.vm.user.name"], "alice")

    @defer.inlineCallbacks
    def test_case_sensitivity_is_read_for_the_logins_tenant(self) -> Generator[Any, Any, None]:
        strict = self.tenant("strict")
        bob = self.user(strict, "Bob", "pw")
        self.set_config(strict, "model.user.login.case-sensitive", "1")
        authenticator = yield self.authenticator()
        auth = yield authenticator.for_connection(PEER).authenticate(basic("Bob@STRICT", "pw"))
        self.assertEqual((auth.user_id, auth.login), (bob, "Bob"))
        yield refused(authenticator.for_connection(PEER).authenticate(basic("bob@strict", "pw")))
        auth = yield authenticator.for_connection(PEER).authenticate(basic("ALICE@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice)

    @defer.inlineCallbacks
    def test_globally_case_sensitive_tenant_names(self) -> Generator[Any, Any, None]:
        self.set_config(-1, "model.user.login.case-sensitive", "1")
        authenticator = yield self.authenticator()
        yield refused(authenticator.for_connection(PEER).authenticate(basic("alice@ACME", "s3cret")))
        auth = yield authenticator.for_connection(PEER).authenticate(basic(" alice@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice)

    @defer.inlineCallbacks
    def test_unusable_tenants(self) -> Generator[Any, Any, None]:
        closed = self.tenant("closed", blocked=True)
        self.user(closed, "carol", "pw")
        self.db.query("UPDATE tenants SET blocked = NULL WHERE id = %s", (self.acme,))
        authenticator = yield self.authenticator()
        for login in ("carol@closed", "carol@nowhere", "carol@*", "carol@-", "carol@"):
            yield refused(authenticator.for_connection(PEER).authenticate(basic(login, "pw")),
                          what=login)
        auth = yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice, "NULL blocked is not blocked")
        self.assertEqual(self.counters(), (6, 1))

    @defer.inlineCallbacks
    def test_blocked_user_counts_an_attempt_but_no_success(self) -> Generator[Any, Any, None]:
        self.user(self.acme, "eve", "pw", blocked=True)
        e = yield refused(self.login(basic("eve@acme", "pw")))
        self.assertIn("blocked", str(e))
        self.assertEqual(self.counters(), (1, 0))

    @defer.inlineCallbacks
    def test_wrong_empty_and_unset_passwords(self) -> Generator[Any, Any, None]:
        self.user(self.acme, "auto", None)
        authenticator = yield self.authenticator()
        for login, password in (("alice@acme", "wrong"), ("alice@acme", ""), ("auto@acme", "x"),
                                ("nobody@acme", "s3cret")):
            yield refused(authenticator.for_connection(PEER).authenticate(
                basic(login, password)), what=(login, password))
        self.assertEqual(self.counters(), (4, 0))

    @defer.inlineCallbacks
    def test_qvd_test_vectors(self) -> Generator[Any, Any, None]:
        ids = {}
        for login, stored in (("superadmin", "kxs9c0f0qnWnPdxubiX2KlCpe/fLcvOkeDqnar/NdKc"),
                              ("admin", "5gdTjBVViDLKyfCyWme65LnIKLIOZ/JYmKL1RvxS+v8")):
            ids[login] = self.insert("INSERT INTO users (tenant_id, login, password)"
                                     " VALUES (1, %s, %s) RETURNING id", (login, stored))
        authenticator = yield self.authenticator()
        for login in ids:
            auth = yield authenticator.for_connection(PEER).authenticate(basic(login, login))
            self.assertEqual(auth.user_id, ids[login])

    @defer.inlineCallbacks
    def test_salt_from_configs_overrides_node_conf(self) -> Generator[Any, Any, None]:
        self.user(self.acme, "db", "pw", salt="database-salt")
        self.user(self.acme, "file", "pw", salt="file-salt")
        self.set_config(-1, "l7r.auth.plugin.default.salt", "database-salt")
        authenticator = yield self.authenticator("l7r.auth.plugin.default.salt = file-salt\n")
        yield authenticator.for_connection(PEER).authenticate(basic("db@acme", "pw"))
        yield refused(authenticator.for_connection(PEER).authenticate(basic("file@acme", "pw")))

    @defer.inlineCallbacks
    def test_colons_belong_to_the_password(self) -> Generator[Any, Any, None]:
        carol = self.user(self.acme, "carol", "a:b::c:")
        self.assertEqual((yield self.login(basic("carol@acme", "a:b::c:"))).user_id, carol)

    @defer.inlineCallbacks
    def test_malformed_authorization_is_a_counted_failure(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        for value in (None, "Basic", b64("alice@acme:s3cret"), "Basic %%%",
                      "Basic " + b64("alice@acme"), "Basic " + b64(":s3cret"), "Negotiate abc"):
            headers = Headers([] if value is None else [("Authorization", value)])
            yield refused(authenticator.for_connection(PEER).authenticate(headers), what=value)
        self.assertEqual(self.counters(), (7, 0))

    @defer.inlineCallbacks
    def test_auth_hex_headers_reach_the_auth(self) -> Generator[Any, Any, None]:
        auth = yield self.login(basic("alice@acme", "s3cret",
                                      ("Auth-" + "LANG".encode().hex(), b64("es_ES")),
                                      ("Auth-xx", "junk")))
        self.assertEqual(auth.headers, {"LANG": "es_ES"})


class CacheTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_same_credentials_on_a_connection_run_nothing_again(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator(
            "l7r.auth.plugins.head = probe\n", plugins=[default, probe("probe", calls)])
        connection = authenticator.for_connection(PEER)
        first = yield connection.authenticate(basic("alice@acme", "s3cret"))
        seen = len(calls)
        again = yield connection.authenticate(basic("alice@acme", "s3cret"))
        self.assertIs(again, first)
        self.assertEqual((len(calls), self.counters()), (seen, (1, 1)))
        yield refused(connection.authenticate(basic("alice@acme", "wrong")))
        self.assertIs((yield connection.authenticate(basic("alice@acme", "s3cret"))), first)
        yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        self.assertEqual(self.counters(), (3, 2))


class BearerTests(AuthTestCase):
    @defer.inlineCallbacks
    def basic_auth(self, authenticator: Authenticator) -> Generator[Any, Any, Auth]:
        return (yield authenticator.for_connection(PEER).authenticate(
            basic("alice@acme", "s3cret")))

    @defer.inlineCallbacks
    def test_single_use_token_is_spent_after_its_first_use(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        alice = yield self.basic_auth(authenticator)
        _, token = yield create_token(self.database, alice, multi_use=False, clock=self.clock)
        connection = authenticator.for_connection(PEER)
        auth = yield connection.authenticate(bearer(token))
        self.assertEqual((auth.user_id, auth.login, auth.tenant_id), (self.alice, "alice", self.acme))
        self.assertIs((yield connection.authenticate(bearer(token))), auth, "cached on its connection")
        yield refused(authenticator.for_connection(PEER).authenticate(bearer(token)))
        self.assertEqual(self.db.query("SELECT count(*) FROM user_tokens")[0][0], 0)

    @defer.inlineCallbacks
    def test_multi_use_token_lasts_until_it_expires(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        alice = yield self.basic_auth(authenticator)
        _, token = yield create_token(self.database, alice, lifetime=100, clock=self.clock)
        for _ in range(3):
            auth = yield authenticator.for_connection(PEER).authenticate(bearer(token))
            self.assertEqual(auth.user_id, self.alice)
        self.clock.advance(100)
        yield authenticator.for_connection(PEER).authenticate(bearer(token))
        self.clock.advance(1)
        yield refused(authenticator.for_connection(PEER).authenticate(bearer(token)))
        self.assertEqual(self.db.query("SELECT count(*) FROM user_tokens")[0][0], 0)
        self.assertEqual(self.counters(), (6, 5))

    @defer.inlineCallbacks
    def test_token_row_and_stored_params(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        alice = yield self.basic_auth(authenticator)
        alice.params.update({"qvd.vm.user.uid": "1000", "qvd.vm.user.name": "alice.ldap"})
        self.clock.advance(1000)
        params_id, token = yield create_token(self.database, alice, clock=self.clock)
        self.assertRegex(token, r"^[A-Za-z0-9]{43}$")
        self.assertEqual(self.db.query(
            "SELECT user_id, vm_id, expiration, auth_params_id, multi_use FROM user_tokens"),
            [(self.alice, None, 1000 + 86400, params_id, True)])
        auth = yield authenticator.for_connection(PEER).authenticate(
            Headers([("Authorization", f"Bearer {token_header_value(token)[:10]}\n"
                                       f" {token_header_value(token)[10:]}")]))
        self.assertEqual(auth.params, {"qvd.vm.user.uid": "1000", "qvd.vm.user.name": "alice.ldap"})
        stored = yield store_auth_params(self.database, alice)
        self.assertEqual(self.db.query("SELECT parameters::text FROM user_auth_parameters"
                                       " WHERE id = %s", (stored,)),
                         [('{"qvd.vm.user.name": "alice.ldap", "qvd.vm.user.uid": "1000"}',)])

    @defer.inlineCallbacks
    def test_token_restricted_to_one_vm(self) -> Generator[Any, Any, None]:
        mine, other = self.vm(self.alice, "desk"), self.vm(self.alice, "spare")
        daves = self.vm(self.dave, "daves")
        authenticator = yield self.authenticator()
        alice = yield self.basic_auth(authenticator)
        rows = {vm_id: VM(vm_id, owner) for vm_id, owner in
                ((mine, self.alice), (other, self.alice), (daves, self.dave))}
        self.assertEqual((yield defer.gatherResults([
            authenticator.allow_access_to_vm(alice, rows[v]) for v in (mine, other, daves)])), [True, True, False])
        _, token = yield create_token(self.database, alice, vm_id=mine, clock=self.clock)
        auth = yield authenticator.for_connection(PEER).authenticate(bearer(token))
        self.assertEqual(auth.vm_id, mine)
        self.assertEqual((yield defer.gatherResults([
            authenticator.allow_access_to_vm(auth, rows[v]) for v in (mine, other, daves)])), [True, False, False])

    @defer.inlineCallbacks
    def test_tokens_of_blocked_users_and_tenants_are_refused(self) -> Generator[Any, Any, None]:
        authenticator = yield self.authenticator()
        alice = yield self.basic_auth(authenticator)
        _, token = yield create_token(self.database, alice, clock=self.clock)
        for table, row in (("users", self.alice), ("tenants", self.acme)):
            self.db.query(f"UPDATE {table} SET blocked = TRUE WHERE id = %s", (row,))
            yield refused(authenticator.for_connection(PEER).authenticate(bearer(token)))
            self.db.query(f"UPDATE {table} SET blocked = FALSE WHERE id = %s", (row,))
        yield authenticator.for_connection(PEER).authenticate(bearer(token))

    @defer.inlineCallbacks
    def test_unknown_token(self) -> Generator[Any, Any, None]:
        yield refused(self.login(bearer("A" * 43)))
        self.assertEqual(self.counters(), (1, 0))


class VM:
    def __init__(self, vm_id: int, user_id: int):
        self.id = vm_id
        self.user_id = user_id


class ThrottlingTests(AuthTestCase):
    LIMITS = ("l7r.auth.throttle.max_failures = 3\nl7r.auth.throttle.max_failures.login = 4\n"
              "l7r.auth.throttle.max_failures.address = 6\nl7r.auth.throttle.window = 60\n")

    @defer.inlineCallbacks
    def test_one_users_typos_do_not_lock_out_their_office(self) -> Generator[Any, Any, None]:
        """Failures for one login from an address lock that login from that address only:
        another user behind the same (NAT) address still gets in with the right password."""
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator(
            self.LIMITS + "l7r.auth.plugins.head = probe\n", plugins=[default, probe("probe", calls)])
        for _ in range(3):
            yield refused(authenticator.for_connection(PEER).authenticate(
                basic("alice@acme", "bad")))
        self.assertEqual(self.counters(), (3, 0))
        del calls[:]
        e = yield refused(authenticator.for_connection(PEER).authenticate(
            basic("alice@acme", "s3cret")), Throttled)
        self.assertIsInstance(e, Unauthorized)
        self.assertNotIn(("probe", "authenticate_basic"), calls)
        self.assertEqual(self.counters(), (3, 0))
        auth = yield authenticator.for_connection(PEER).authenticate(basic("dave", "d4ve"))
        self.assertEqual(auth.user_id, self.dave, "another login from the same address")
        auth = yield authenticator.for_connection("192.0.2.99").authenticate(
            basic("alice@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice, "the same login from another address")
        self.clock.advance(60)
        yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        self.assertEqual(self.counters(), (6, 3))

    @defer.inlineCallbacks
    def test_a_login_is_locked_whatever_the_address(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator(
            self.LIMITS + "l7r.auth.plugins.head = probe\n", plugins=[default, probe("probe", calls)])
        for n, login in enumerate(("alice@acme", " ALICE@acme", "alice#ACME", "alice@acme")):
            yield refused(authenticator.for_connection(f"198.51.100.{n}").authenticate(
                basic(login, "bad")))
        del calls[:]
        yield refused(authenticator.for_connection("203.0.113.1").authenticate(
            basic("alice@acme", "s3cret")), Throttled)
        self.assertNotIn(("probe", "authenticate_basic"), calls)
        self.assertEqual(self.counters(), (4, 0))
        yield authenticator.for_connection("203.0.113.1").authenticate(basic("dave", "d4ve"))
        self.clock.advance(60)
        auth = yield authenticator.for_connection("203.0.113.1").authenticate(
            basic("alice@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice)

    @defer.inlineCallbacks
    def test_a_spray_from_one_address_locks_it(self) -> Generator[Any, Any, None]:
        """One guess for each of many logins: the address's own (higher) ceiling; a
        success in between does not clear it."""
        authenticator = yield self.authenticator(self.LIMITS)
        for n in range(5):
            yield refused(authenticator.for_connection(PEER).authenticate(
                basic(f"user{n}@acme", "x")))
        yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        yield refused(authenticator.for_connection(PEER).authenticate(basic("other@acme", "x")))
        yield refused(authenticator.for_connection(PEER).authenticate(
            basic("alice@acme", "s3cret")), Throttled)
        yield authenticator.for_connection("192.0.2.99").authenticate(basic("alice@acme", "s3cret"))


class PluginTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_chain_order_and_first_sufficient_plugin(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        plugins = [default, probe("first", calls, password="master"), probe("second", calls)]
        self.set_config(self.acme, "l7r.auth.plugins", "Second")
        authenticator = yield self.authenticator(
            "l7r.auth.plugins.head = FIRST\n", plugins=plugins)
        auth = yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "master"))
        self.assertEqual(auth.user_id, self.alice)
        self.assertEqual(calls, [
            ("first", "normalize_login"), ("second", "normalize_login"),
            ("first", "split_second_factor"), ("second", "split_second_factor"),
            ("first", "authenticate_basic"),
            ("first", "after_authenticate_basic"), ("second", "after_authenticate_basic")])
        del calls[:]
        yield authenticator.for_connection(PEER).authenticate(basic("dave", "d4ve"))
        self.assertEqual([c for c in calls if c[1] == "authenticate_basic"],
                         [("first", "authenticate_basic")], "tenant 1 has no 'second'")

    @defer.inlineCallbacks
    def test_an_accepted_login_without_a_user_falls_through(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator(
            "l7r.auth.plugins.head = probe\n", plugins=[default, probe("probe", calls, password="pw")])
        yield refused(authenticator.for_connection(PEER).authenticate(basic("ghost@acme", "pw")))
        self.assertIn(("probe", "after_authenticate_basic"), calls)

    @defer.inlineCallbacks
    def test_second_factor(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator("l7r.auth.plugins.head = totp\n", plugins=[
            default, probe("totp", calls, second_factor_size=6, token="123456")])
        auth = yield authenticator.for_connection(PEER).authenticate(
            basic("alice@acme", "s3cret123456"))
        self.assertEqual(auth.user_id, self.alice)
        for password in ("s3cret654321", "s3cret"):
            yield refused(authenticator.for_connection(PEER).authenticate(
                basic("alice@acme", password)))

    @defer.inlineCallbacks
    def test_plugin_exceptions_are_auth_errors(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        authenticator = yield self.authenticator("l7r.auth.plugins.head = boom\n", plugins=[
            default, probe("boom", calls, authenticate_basic=KeyError("auth.ldap.host"))])
        e = yield refused(authenticator.for_connection(PEER).authenticate(
            basic("alice@acme", "s3cret")), AuthError)
        self.assertIsInstance(e, PluginError)
        self.assertNotIn("auth.ldap.host", str(e))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(self.counters(), (1, 0))

    @defer.inlineCallbacks
    def test_unknown_plugin_is_an_auth_error(self) -> Generator[Any, Any, None]:
        e = yield refused(self.login(basic("alice@acme", "s3cret"),
                                     "l7r.auth.plugins = nosuch\n"), AuthError)
        self.assertIn("unknown authentication plugin 'nosuch'", str(e))
        self.assertIn("default", str(e))

    @defer.inlineCallbacks
    def test_hooks_around_requests(self) -> Generator[Any, Any, None]:
        calls: list[tuple[str, str]] = []
        listing = [(1, "desk", "running", False, False)]
        authenticator = yield self.authenticator("l7r.auth.plugins.head = a, b\n", plugins=[
            default, probe("a", calls), probe("b", calls, list_of_vm=listing)])
        auth = yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        del calls[:]
        yield authenticator.before_list_of_vms(auth)
        self.assertEqual((yield authenticator.list_of_vm(auth, False)), listing)
        yield authenticator.before_connect_to_vm(auth)
        self.assertEqual(calls, [("a", "before_list_of_vms"), ("b", "before_list_of_vms"),
                                 ("a", "list_of_vm"), ("b", "list_of_vm"),
                                 ("a", "before_connect_to_vm"), ("b", "before_connect_to_vm")])
        plain = yield self.authenticator()
        self.assertIsNone((yield plain.list_of_vm(auth, True)))


CUSTOM_PLUGIN = """
    from qvd.l7r.auth import AuthPlugin, AuthPluginFactory

    class Ticket(AuthPlugin):
        \"\"\"Lets in anyone who knows the ticket (a configuration key).\"\"\"

        def authenticate_basic(self, auth, login, password):
            return password == self.config.get("auth.ticket.value", default="")

    ticket = AuthPluginFactory("Ticket", Ticket)
"""


class DiscoveryTests(AuthTestCase):
    @defer.inlineCallbacks
    def test_a_plugin_installed_beside_ours_is_found_by_name(self) -> Generator[Any, Any, None]:
        install_plugin(self, "qvd_test_ticket_auth", CUSTOM_PLUGIN)
        self.set_config(-1, "auth.ticket.value", "golden")
        authenticator = yield self.authenticator("l7r.auth.plugins = TICKET\n")
        auth = yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "golden"))
        self.assertEqual(auth.user_id, self.alice)
        auth = yield authenticator.for_connection(PEER).authenticate(basic("alice@acme", "s3cret"))
        self.assertEqual(auth.user_id, self.alice, "the default tail still runs")
