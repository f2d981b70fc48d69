"""A farm whose nodes run ``twistd qvd-node`` (HKD and L7R in one process), as a real node
does: the node serves, and a desktop session works through it."""

from __future__ import annotations

import psutil
from twisted.internet.defer import inlineCallbacks

from qvd.farm import network
from tests.farm.support import FarmTestCase


class CombinedNodeTests(FarmTestCase):
    nodes = 1
    combined = True

    @inlineCallbacks
    def test_one_process_per_node(self):
        [node] = self.farm.nodes
        [pid] = network.pids_in(node.namespace)
        self.assertIn("qvd-node", psutil.Process(pid).cmdline())
        self.assertIs(node.hkd, node.l7r)
        yield self.in_thread(self.farm.wait_hkd_running, node)
        [user] = yield self.users(1)
        desktop = yield self.connected(user)
        yield self.wait_x(user[2], "connected")
        self.assertTrue(desktop.alive)
