"""Bearer tokens cannot widen themselves: a token only mints tokens no wider and no
longer-lived than itself, and no token row outlives its use (protocols/l7r-http.md,
``create_auth_token``).  Over HTTP against an in-process L7R on a real QVD-DB holding
the document's fixture: alice (10000) owns VMs 10000 and 10001, bob owns 10002."""

from __future__ import annotations

import json
import time
from typing import Any, Generator

from twisted.internet import defer

from qvd.db.pool import Database
from qvd.l7r.auth import Auth, create_token, token_header_value
from qvd.config import Config
from tests.support.rawclient import Reply, connect
from tests.l7r.test_conformance import L7RTestCase

ALICE = 10000
CONNECT = (b"GET /qvd/connect_to_vm?id=10000 HTTP/1.1\n"
           b"Authorization: Basic YWxpY2U6czNjcmV0\n"  # alice:s3cret
           b"Connection: Upgrade\nUpgrade: QVD/1.0\n\n")


class TokenTests(L7RTestCase):
    conf = "internal.l7r.poll_time.vm = 0.1\n"

    @defer.inlineCallbacks
    def token(self, **limits: Any) -> Generator[Any, Any, str]:
        """A token of alice's as a client would send it, made by ``create_token``."""
        database = Database(Config.load(self.node.conf), "test-tokens")
        yield database.start()
        try:
            _, raw = yield create_token(database, Auth(peer="test", user_id=ALICE), **limits)
        finally:
            yield database.close()
        return token_header_value(raw)

    @defer.inlineCallbacks
    def get(self, target: str, token: str) -> Generator[Any, Any, Reply]:
        client = yield connect(self.node.port)
        client.send(f"GET {target} HTTP/1.1\nAuthorization: Bearer {token}\n\n".encode())
        try:
            return (yield client.response())
        finally:
            yield client.close()

    @defer.inlineCallbacks
    def mint(self, token: str) -> Generator[Any, Any, tuple[str, tuple]]:
        """A new token from ``create_auth_token`` with ``token``, and its row
        (vm_id, expiration, multi_use)."""
        reply = yield self.get("/qvd/create_auth_token", token)
        self.assertEqual(reply.status, 200, reply.body)
        minted = json.loads(reply.body)["auth_token"]
        row = self.node.sql(
            "SELECT t.vm_id, t.expiration, t.multi_use FROM user_tokens t"
            " JOIN user_auth_parameters p ON p.id = t.auth_params_id"
            " WHERE t.auth_params_id = %s", (json.loads(reply.body)["auth_params_id"],))[0]
        return minted, row

    def rows(self) -> tuple[int, int]:
        """(user_tokens rows, user_auth_parameters rows)."""
        return (self.node.sql("SELECT count(*) FROM user_tokens")[0][0],
                self.node.sql("SELECT count(*) FROM user_auth_parameters")[0][0])

    @defer.inlineCallbacks
    def test_a_token_for_one_vm_only_mints_tokens_for_that_vm(self) -> Generator[Any, Any, None]:
        limited = yield self.token(vm_id=10001)
        refused = yield self.get("/qvd/stop_vm?id=10000", limited)
        self.assertEqual(refused.status, 403, refused.body)

        minted, (vm_id, _, _) = yield self.mint(limited)
        self.assertEqual(vm_id, 10001)
        reply = yield self.get("/qvd/stop_vm?id=10000", minted)
        self.assertEqual((reply.status, reply.body),
                         (403, b"You are not allowed to access requested virtual machine"))
        reply = yield self.get("/qvd/stop_vm?id=10001", minted)
        self.assertEqual((reply.status, reply.body), (200, b"Machine stopped\r\n"))

    @defer.inlineCallbacks
    def test_a_minted_token_expires_no_later_than_its_parent(self) -> Generator[Any, Any, None]:
        parent = yield self.token(lifetime=120)
        _, (_, expiration, multi_use) = yield self.mint(parent)
        self.assertLessEqual(expiration, int(time.time()) + 120)
        self.assertTrue(multi_use)
        password_login = yield self.token()
        _, (vm_id, expiration, _) = yield self.mint(password_login)
        self.assertIsNone(vm_id)
        self.assertGreater(expiration, int(time.time()) + 86000, "a day from a full token")

    @defer.inlineCallbacks
    def test_a_single_use_token_mints_only_single_use_ones(self) -> Generator[Any, Any, None]:
        once = yield self.token(multi_use=False)
        minted, (_, _, multi_use) = yield self.mint(once)
        self.assertFalse(multi_use)
        reply = yield self.get("/qvd/list_of_vm", minted)
        self.assertEqual(reply.status, 200, reply.body)
        reply = yield self.get("/qvd/list_of_vm", minted)
        self.assertEqual(reply.status, 401, "spent on its first use")
        self.assertEqual(self.rows(), (0, 0), "spent tokens leave no rows behind")

    @defer.inlineCallbacks
    def test_an_expired_token_goes_with_its_params(self) -> Generator[Any, Any, None]:
        expired = yield self.token(lifetime=-1)
        self.assertEqual(self.rows(), (1, 1))
        reply = yield self.get("/qvd/list_of_vm", expired)
        self.assertEqual(reply.status, 401)
        self.assertEqual(self.rows(), (0, 0))

    @defer.inlineCallbacks
    def test_a_failed_connect_leaves_no_token_behind(self) -> Generator[Any, Any, None]:
        """No HKD heartbeats here: the connect fails after the session was acquired
        (no host can be assigned), and the VMA token made for it goes with it."""
        self.node.sql("UPDATE host_runtimes SET ok_ts = NULL")
        client = yield connect(self.node.port)
        client.send(CONNECT)
        reply = yield client.response()
        yield client.close()
        self.assertEqual(reply.status, 503, reply.body)
        self.assertIn(b"no host available", reply.body)
        self.assertEqual(self.rows(), (0, 0))
