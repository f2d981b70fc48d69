"""What live sessions see when the node goes away: rows reset in the right order on a
SIGTERM, and ``qvd-client`` saying the connection was lost (not "taken over")."""

from __future__ import annotations

from twisted.internet.defer import gatherResults, inlineCallbacks

from tests.support.node import ClientProcess, NodeTestCase
from tests.support.waiting import poll_blocking

LOST = "The connection to the server was lost"
SESSIONS = 3


class NodeGoneTests(NodeTestCase):
    def rows(self) -> list[tuple[str, str]]:
        return self.db.query("SELECT vm_state, user_state FROM vm_runtimes ORDER BY vm_id")

    @inlineCallbacks
    def sessions(self) -> list[ClientProcess]:
        """SESSIONS raw ``--pipe`` sessions on as many VMs, all ``connected``."""
        for n in range(1, SESSIONS):
            self.qa(f"vm new name=desk{n},user=alice,osf=desk")
        clients = [self.client("--pipe", "--vm", name)
                   for name in ["desk"] + [f"desk{n}" for n in range(1, SESSIONS)]]
        try:
            yield poll_blocking(self.rows, lambda rows: rows == [("running", "connected")] * SESSIONS,
                       60, "every session connected")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain(*clients)}") from None
        return clients

    @inlineCallbacks
    def test_sigterm_releases_every_session_before_stopping_the_vms(self):
        yield self.start_node()
        clients = yield self.sessions()
        yield self.node.kill("TERM")
        why = self.explain(*clients)
        self.assertEqual(self.rows(), [("stopped", "disconnected")] * SESSIONS, why)
        self.assertNotIn("cannot release", self.node.output(), why)
        codes = yield gatherResults([client.ended for client in clients])
        self.assertEqual(codes, [4] * SESSIONS, why)
        for client in clients:
            self.assertIn(LOST, client.stderr, why)
            self.assertNotIn("taken", client.stderr, why)

    @inlineCallbacks
    def test_a_killed_node_is_a_lost_connection_for_its_clients(self):
        yield self.start_node()
        clients = yield self.sessions()
        self.node.kill("KILL")
        codes = yield gatherResults([client.ended for client in clients])
        why = self.explain(*clients)
        self.assertEqual(codes, [4] * SESSIONS, why)
        for client in clients:
            self.assertIn(LOST, client.stderr, why)

    @inlineCallbacks
    def test_listing_ends_without_a_word_about_interruptions(self):
        yield self.start_node()
        code, out, err = yield self.run_client("-l")
        self.assertEqual(code, 0, err)
        self.assertIn("desk", out)
        self.assertNotIn("Interrupted", err)
