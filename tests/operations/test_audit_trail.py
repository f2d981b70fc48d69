"""The audit trail in the ``log`` table: the L7R's logins (with why they failed), connects
and disconnects, ``qa``'s changes (direct mode), read back with ``qa log get`` - and never
a password, a token or a secret configuration value in it."""

from __future__ import annotations

import base64
import json
from typing import Any, Generator

from twisted.internet import defer, task
from twisted.trial import unittest

from qvd.audit import AuditEntry, AuditQueue
from qvd.db.pool import Database
from qvd.stream.sockets import free_port
from tests.l7r.test_conformance import L7RTestCase
from tests.support.admin import qa_refused
from tests.support.postgres import drop_database, new_database
from tests.support.rawclient import connect
from tests.support.waiting import poll_blocking

SECRETS = ("s3cret", "b0b", "guess-1", "guess-2", "guess-3", "hunter2", "Secr3tPass")


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


class L7RTrailTests(L7RTestCase):
    conf = "l7r.auth.throttle.max_failures = 2\n"

    @defer.inlineCallbacks
    def request(self, target: str, authorization: str,
                upgrade: bool = False) -> Generator[Any, Any, int]:
        client = yield connect(self.node.port)
        extra = "Connection: Upgrade\nUpgrade: QVD/1.0\n" if upgrade else ""
        client.send(f"GET {target} HTTP/1.1\nAuthorization: {authorization}\n{extra}\n".encode())
        reply = yield client.response()
        yield client.close()
        return reply.status

    def rows(self, source: str) -> list[tuple]:
        return self.node.sql("SELECT action, type_of_action, qvd_object, object_name, status,"
                             " arguments, source, ip FROM log WHERE source = %s ORDER BY id",
                             (source,))

    @defer.inlineCallbacks
    def test_logins_and_a_refused_connect(self) -> Generator[Any, Any, None]:
        alice_old = self.node.sql("SELECT id FROM vms WHERE name = 'alice-old'")[0][0]
        statuses = []
        for authorization in (basic("alice", "s3cret"), basic("bob", "guess-1"),
                              basic("bob", "guess-2"), basic("bob", "guess-3"),
                              basic("mallory", "m4l"), "Bearer bm90LWEtdG9rZW4="):
            statuses.append((yield self.request("/qvd/list_of_vm", authorization)))
        statuses.append((yield self.request(f"/qvd/connect_to_vm?id={alice_old}",
                                            basic("alice", "s3cret"), upgrade=True)))
        self.assertEqual(statuses, [200, 401, 401, 401, 401, 401, 403])
        rows = yield poll_blocking(lambda: self.rows("L7R"), lambda r: len(r) == 8, 10,
                                   "the L7R's audit rows")  # the connect logged alice in again
        logins = [(r[3], r[4], json.loads(r[5]) if r[5] else None) for r in rows[:6]]
        self.assertEqual(logins, [
            ("alice", 0, None),
            ("bob", 3200, {"reason": "wrong password or unknown user"}),
            ("bob", 3200, {"reason": "wrong password or unknown user"}),
            ("bob", 3200, {"reason": "throttled: too many recent failures for this login"}),
            ("mallory", 3200, {"reason": "user is blocked"}),
            (None, 3200, {"reason": "unknown or expired token"}),
        ])
        self.assertEqual({r[:3] + r[6:] for r in rows[:6]},
                         {("user_login", "login", "user", "L7R", "127.0.0.1")})
        self.assertEqual(rows[6][3:5], ("alice", 0))
        action, kind, what, name, status, arguments, _, _ = rows[7]
        self.assertEqual((action, kind, what, name, status), ("vm_connect", "exec", "vm",
                                                              "alice-old", 4210))
        self.assertEqual(json.loads(arguments)["user"], "alice")
        self.assertIn("forbidden", json.loads(arguments)["reason"])
        self.assertNotIn("s3cret", repr(self.node.sql("SELECT * FROM log")))

        value = self.node.service.metrics.registry.get_sample_value
        self.assertEqual(value("qvd_l7r_connect_failures_total", {"reason": "forbidden"}), 1)
        self.assertEqual(value("qvd_l7r_auth_throttled_total", {"scope": "login"}), 1)
        self.assertEqual(value("qvd_l7r_auth_attempts_total", {"plugin": "token"}), 1)
        self.assertEqual(value("qvd_l7r_logins_total", {"result": "failed"}), 4)

    def test_qa_changes_and_qa_log_get(self) -> None:
        qa = self.node.qa
        qa("qa user new login=carol,password=Secr3tPass")
        qa("qa user login=carol set passwd=hunter2")
        qa("qa config set tenant_id=-1,key=auth.ldap.bindpass,value=hunter2")
        qa("qa vm name=alice-desktop block")
        refusal = qa_refused(self.node.conf, "osf name=desktops del")
        self.assertIn("osf del refused", refusal)
        rows = self.rows("CLI")[-5:]
        self.assertEqual([r[:5] for r in rows], [
            ("user_create", "create", "user", "carol", 0),
            ("user_update", "update", "user", "carol", 0),
            ("config_set", "create_or_update", "config", "auth.ldap.bindpass", 0),
            ("vm_update", "update", "vm", "alice-desktop", 0),
            ("osf_delete", "delete", "osf", "desktops", 7120),
        ])
        self.assertEqual(json.loads(rows[0][5]), {"login": "carol", "password": "**********"})
        self.assertEqual(json.loads(rows[2][5]), {"tenant_id": "-1", "key": "auth.ldap.bindpass",
                                                  "value": "**********"})
        self.assertEqual(json.loads(rows[3][5]), {"filter": "name=alice-desktop", "blocked": 1})
        self.assertIn("refused", json.loads(rows[4][5])["error"])
        who = self.node.sql("SELECT DISTINCT administrator_name FROM log WHERE source = 'CLI'")
        self.assertRegex(who[0][0], r"^\S+@\S+$", "the Unix account and machine")

        listing = qa('qa log "source=CLI,qvd_object=user" get action, object_name, status')
        self.assertIn("| user_create | carol       | 0      |", listing)
        self.assertIn("Total: 6", listing)  # the fixture's users (and mallory's block), carol
        failed = json.loads(qa('qa --format json log "status!=0" get action, status'))
        self.assertEqual(failed["rows"], [{"action": "osf_delete", "status": 7120}])
        self.assertIn("is not an action for log",
                      qa_refused(self.node.conf, "log id=1 del"))
        everything = repr(self.node.sql("SELECT * FROM log"))
        for secret in SECRETS:
            self.assertNotIn(secret, everything)


class AuditQueueTests(unittest.TestCase):
    """Rows wait while QVD-DB is out of reach, at most ``limit`` of them."""

    @defer.inlineCallbacks
    def test_rows_wait_for_the_database(self) -> Generator[Any, Any, None]:
        db = new_database()
        self.addCleanup(drop_database, db)
        unreachable = db.config(f"database.port = {free_port()}\n"
                                "internal.database.client.connect.timeout = 2\n")
        clock = task.Clock()
        queue = AuditQueue(Database(unreachable, "audit-test"), clock, limit=3)
        for n in range(5):
            queue.add(AuditEntry("user_login", "login", "user", 0, object_name=f"u{n}"))
        yield queue.flush()
        self.assertEqual([e.object_name for e in queue.pending], ["u2", "u3", "u4"])
        reachable = Database(db.config(), "audit-test")
        yield reachable.start()
        self.addCleanup(reachable.close)
        queue.database = reachable
        yield queue.flush()
        self.assertEqual(queue.pending, [])
        self.assertEqual(db.query("SELECT object_name FROM log WHERE action = 'user_login'"
                                  " ORDER BY id"), [("u2",), ("u3",), ("u4",)])
