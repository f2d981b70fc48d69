"""The golden transcripts of protocols/l7r-http.md, replayed byte for byte against an
in-process L7R (plain HTTP on loopback) on a real QVD-DB holding the document's fixture."""

from __future__ import annotations

import json
from typing import Any, Callable, Generator

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.l7r import Node, apply_fixture, make_node, replay, start_l7r
from tests.support.rawclient import get
from tests.support.transcripts import replays, transcripts
from tests.support.postgres import cluster

TRANSCRIPTS = transcripts("l7r-http.md")


class L7RTestCase(unittest.TestCase):
    """One fresh database with the document's fixture and one L7R per test;
    ``conf`` is extra node.conf text."""

    conf = ""

    @defer.inlineCallbacks
    def setUp(self) -> Generator[defer.Deferred[Any], Any, None]:
        node = make_node(self, self.conf, register=False)
        apply_fixture(node)
        self.node: Node = yield start_l7r(self, node)
        self.captured: dict[str, bytes] = {}

    def replay(self, name: str) -> defer.Deferred[None]:
        return replay(self, self.node.port, TRANSCRIPTS[name], self.captured)

    def vm_runtime(self, vm_id: int) -> tuple:
        return self.node.sql("SELECT vm_state, vm_cmd, user_state, real_user_id, host_id"
                             " FROM vm_runtimes WHERE vm_id = %s", (vm_id,))[0]


def counted(http_requests: int, attempts: int, ok: int) -> Callable[[L7RTestCase], None]:
    """A ``then`` for ``replays``: the host's counters after the transcript."""
    def check(test: L7RTestCase) -> None:
        test.assertEqual(test.node.counters(), (http_requests, attempts, ok),
                         "(http_requests, attempts, ok)")
    return check


def qa(line: str) -> Callable[[L7RTestCase], object]:
    """A ``given`` for ``replays``: a ``qa`` command first."""
    return lambda test: test.node.qa(line)


def sql(statement: str) -> Callable[[L7RTestCase], object]:
    """A ``given`` for ``replays``: a statement on QVD-DB first."""
    return lambda test: test.node.sql(statement)


class ConformanceTests(L7RTestCase):

    def test_every_transcript_is_replayed(self) -> None:
        source = open(__file__).read()
        self.assertEqual([name for name in TRANSCRIPTS if f'"{name}"' not in source], [])

    # -- ping ----------------------------------------------------------------------------------
    test_ping = replays("ping")

    test_ping_unregistered = replays("ping-unregistered", qa("qa host name=test-node del"))
    test_ping_blocked = replays("ping-blocked", qa("qa host name=test-node block"))
    test_ping_stopped = replays("ping-stopped", sql("UPDATE host_runtimes SET state = 'stopped'"))

    @defer.inlineCallbacks
    def test_ping_with_a_silent_hkd(self) -> Generator[defer.Deferred[Any], Any, None]:
        """A node whose HKD never beat, or stopped beating for longer than an HKD
        waits before giving up, is not alive for a balancer."""
        self.node.sql("UPDATE host_runtimes SET ok_ts = NULL")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body),
                         (503, b"The HKD of this node is not running: no heartbeat"))
        self.node.sql("UPDATE host_runtimes SET ok_ts = now() - interval '451 seconds'")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual(reply.status, 503)
        self.assertRegex(reply.body, rb"^The HKD of this node is not running: no heartbeat"
                                     rb" for 45\d s$")
        self.node.sql("UPDATE host_runtimes SET ok_ts = now() - interval '440 seconds'")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body), (200, b"I am alive!\r\n"))

    @defer.inlineCallbacks
    def test_ping_without_database(self) -> Generator[defer.Deferred[Any], Any, None]:
        """The database gone: a clean 503 (a health check takes the node out), no
        logged failure; and the node answers again once the database is back."""
        name = self.node.db.name
        self.addCleanup(cluster().psql, f'ALTER DATABASE "{name}" CONNECTION LIMIT -1')
        cluster().psql(f'ALTER DATABASE "{name}" CONNECTION LIMIT 0')
        cluster().psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       f" WHERE datname = '{name}' AND application_name = 'qvd-l7r'")
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body),
                         (503, b"The database is not available, retry later"))
        cluster().psql(f'ALTER DATABASE "{name}" CONNECTION LIMIT -1')
        reply = yield get(self.node.port, "/qvd/ping")
        self.assertEqual((reply.status, reply.body), (200, b"I am alive!\r\n"))

    # -- listings ------------------------------------------------------------------------------
    test_list_of_vm = replays("list-of-vm", then=counted(1, 1, 1))
    test_list_of_applications = replays("list-of-applications")
    test_tenant_normalised = replays("tenant-normalised")

    test_list_of_vm_node_stopped = replays("list-of-vm-node-stopped",
                                           sql("UPDATE host_runtimes SET state = 'stopped'"),
                                           counted(1, 1, 1))

    test_keep_alive = replays("keep-alive", then=counted(2, 1, 1))

    # -- authenticate_user, tokens -------------------------------------------------------------
    @defer.inlineCallbacks
    def test_authenticate_user(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.replay("authenticate-user")
        self.assertEqual(self.node.sql("SELECT * FROM user_auth_parameters"), [])
        self.assertEqual(self.node.counters(), (0, 1, 1))

    @defer.inlineCallbacks
    def test_authenticate_user_store(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.replay("authenticate-user-store")
        (stored,), = self.node.sql("SELECT parameters FROM user_auth_parameters WHERE id = 10000")
        self.assertEqual(json.loads(stored) if isinstance(stored, str) else stored,
                         {"qvd.vm.user.name": "alice"})

    @defer.inlineCallbacks
    def test_create_auth_token_then_bearer(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.replay("create-auth-token")
        rows = self.node.sql("SELECT user_id, vm_id, multi_use, auth_params_id,"
                             " expiration - extract(epoch FROM now())::int FROM user_tokens")
        self.assertEqual(len(rows), 1)
        user_id, vm_id, multi_use, params_id, lifetime = rows[0]
        self.assertEqual((user_id, vm_id, multi_use, params_id), (10000, None, True, 10000))
        self.assertLessEqual(abs(lifetime - 86400), 60, "expires in 24 h")
        # multi_use honoured: the token works on several connections, not only this one
        yield self.replay("bearer")
        yield self.replay("bearer")
        self.assertEqual(self.node.counters(), (2, 3, 3))

    # -- stop_vm -------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_stop_vm(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.replay("stop-vm")
        self.assertEqual(self.vm_runtime(10000)[:2], ("stopped", None))
        self.assertEqual(self.node.counters(), (4, 1, 1))

    # -- connect_to_vm -------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_connect_refused(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self.replay("connect-refused")
        for vm_id in (10000, 10002, 10003):  # nothing written for any VM
            self.assertEqual(self.vm_runtime(vm_id),
                             ("stopped", None, "disconnected", None, None))
        self.assertEqual(self.node.sql("SELECT count(*) FROM user_tokens"), [(0,)])
        self.assertEqual(self.node.counters(), (6, 1, 1))

    @defer.inlineCallbacks
    def test_connect_node_blocked(self) -> Generator[defer.Deferred[Any], Any, None]:
        self.node.qa("qa host name=test-node block")
        yield self.replay("connect-node-blocked")
        self.assertEqual(self.vm_runtime(10000), ("stopped", None, "disconnected", None, None))
        self.assertEqual(self.node.counters(), (1, 1, 1))

    # -- authentication failures ---------------------------------------------------------------
    test_unauthorized = replays("unauthorized", then=counted(5, 6, 0))

    # -- the dialect ---------------------------------------------------------------------------
    test_not_found = replays("not-found", then=counted(0, 0, 0))
    test_wrong_version = replays("wrong-version")
    test_no_version = replays("no-version")
    test_bad_header = replays("bad-header")


class ThrottledTests(L7RTestCase):
    """The same L7R with a low brute-force limit (only its own transcript)."""

    conf = "l7r.auth.throttle.max_failures = 2\n"

    # the throttled third attempt ran no plugin and was not counted
    test_throttled = replays("throttled", then=counted(3, 2, 0))
