"""A desktop session outlives a PostgreSQL restart, and the L7R serves new requests after it.

The L7R holds no database connection for a running session: the splice is
client socket to nxagent socket.  After the restart its pool reconnects, so
the next requests work and the session's end is still written down.
"""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer

from tests.support.node import NodeTestCase
from tests.support.x11 import start_xvfb, window
from tests.support.waiting import poll_blocking
from tests.support.postgres import cluster


class DatabaseRestartTests(NodeTestCase):
    @defer.inlineCallbacks
    def list_until_it_works(self) -> Generator[Any, Any, str]:
        """New requests after the restart: at most the first may meet a dead connection."""
        for _ in range(5):
            code, out, err = yield self.run_client("-l")
            if code == 0:
                return out
        raise AssertionError(f"qvd-client -l still fails after the restart: {err}")

    @defer.inlineCallbacks
    def test_session_survives_and_new_requests_work(self) -> Generator[Any, Any, None]:
        yield self.start_node()
        display = yield start_xvfb(self)
        client = self.client("-o", display=display)
        yield poll_blocking(lambda: client.ended.called or window(display, "xclock"), bool, 60,
                   "xclock window")
        self.assertFalse(client.ended.called, self.explain(client))
        [xclock] = self.session_pids()

        self.addCleanup(cluster().start)
        cluster().restart()

        self.assertFalse(client.ended.called, self.explain(client))
        self.assertEqual((yield self.x_state()), "connected")
        self.assertIsNotNone(window(display, "xclock"))
        self.assertIn("desk", (yield self.list_until_it_works()))
        self.assertFalse(client.ended.called, "the session ended with the database restart")
        self.assertEqual(self.session_pids(), [xclock])

        client.transport.signalProcess("KILL")
        yield client.ended
        yield poll_blocking(lambda: self.runtime()["user_state"], lambda s: s == "disconnected", 30,
                   "session released in the database after the restart")
