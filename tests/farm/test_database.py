"""QVD-DB restarted, then stopped for longer than the cluster's node timeout, under live
NX sessions: no session drops; logins through the balancer are answered 503 "The
database is not available, retry later" (haproxy falls back to the nodes it took out,
so users read that rather than a dropped connection); logins work again within 2 s of
the database's return; no node takes the outage for the others' death."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from qvd.farm.sessions import request, settings_for
from tests.farm.support import FarmTestCase, every

OUTAGE = 8.0  # seconds; longer than the fast timers' cluster.node.timeout (6 s)
RECOVERY = 2.0  # seconds after the database's return within which logins work again
DOWN_BODY = b"The database is not available, retry later"


class DatabaseFailureTests(FarmTestCase):
    def login(self, user: tuple[str, str, int], host=None):
        settings = settings_for(host or self.farm.address, self.farm.port, self.farm.cert,
                                user[0], user[1])
        return request(reactor, settings, "/qvd/list_of_vm")

    @inlineCallbacks
    def sessions_all_alive(self, desktops, vm_ids):
        self.assertEqual([d.vm_id for d in desktops if not d.alive], [], "sessions dropped")
        states = yield every(self.x_state(vm_id) for vm_id in vm_ids)
        self.assertEqual(set(states), {"connected"})
        rows = [self.row(vm_id) for vm_id in vm_ids]
        self.assertEqual({(r["vm_state"], r["user_state"]) for r in rows},
                         {("running", "connected")})

    @inlineCallbacks
    def test_restart_and_outage_drop_no_session(self):
        farm = self.farm
        users, desktops, vm_ids = yield self.live_sessions(4)
        hosts = {self.row(vm_id)["host_id"] for vm_id in vm_ids}

        yield self.in_thread(farm.database.restart)
        for node in farm.nodes:  # each L7R's first request after the restart works
            reply = yield self.login(users[0], node.address)
            self.assertEqual(reply.status, 200, reply.body)
        yield self.sessions_all_alive(desktops, vm_ids)

        yield self.in_thread(farm.database.stop)
        stopped_at = time.monotonic()
        answers = []
        while time.monotonic() - stopped_at < OUTAGE:
            reply = yield self.login(users[1])
            answers.append((reply.status, reply.body))
            yield deferLater(reactor, 0.2, lambda: None)
        balancer = yield self.in_thread(farm.balancer)
        self.assertEqual({status for status, _ in balancer.values()}, {"DOWN"},
                         "every node's health check fails while QVD-DB is down")
        self.assertEqual(set(answers), {(503, DOWN_BODY)})

        yield self.in_thread(farm.database.start)
        back_at = time.monotonic()
        while True:
            reply = yield self.login(users[1])
            if reply.status == 200:
                break
            self.assertEqual((reply.status, reply.body), (503, DOWN_BODY))
            self.assertLess(time.monotonic() - back_at, RECOVERY, "logins still refused")
        self.assertLess(time.monotonic() - back_at, RECOVERY)

        yield self.sessions_all_alive(desktops, vm_ids)
        states = farm.sql("SELECT DISTINCT state FROM host_runtimes")
        self.assertEqual(states, [("running",)], "a node was taken for lost after the outage")
        self.assertEqual({self.row(vm_id)["host_id"] for vm_id in vm_ids}, hosts)
        yield self.in_thread(farm.wait_balanced, {n.name: "UP" for n in farm.nodes}, 10)
