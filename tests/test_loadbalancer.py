"""The load balancer as a pure function over candidate rows, and its plugins."""

from __future__ import annotations

import random


from hypothesis import given, settings, strategies as st
from twisted.trial import unittest

from qvd.config import Config
from qvd.db.hosts import LB_CANDIDATES, Candidate, candidates
from qvd.loadbalancer import NoHostAvailable, VMInfo, choose_host, eligible
from tests.support.postgres import drop_database, new_database
from tests.support.plugins import install_plugin

VM = VMInfo(10000, "desk", 10000, 10000, "default")
FRESH = 600.0


def weights(ram: float, cpu: float, rand: float, plugin: str = "default") -> Config:
    return Config({
        "l7r.loadbalancer.plugin": plugin,
        "l7r.loadbalancer.plugin.default.weight.ram": str(ram),
        "l7r.loadbalancer.plugin.default.weight.cpu": str(cpu),
        "l7r.loadbalancer.plugin.default.weight.random": str(rand),
    })


hosts = st.builds(
    Candidate,
    host_id=st.integers(10000, 10050),
    name=st.just("h"),
    backend=st.booleans(),
    blocked=st.booleans(),
    state=st.sampled_from(["stopped", "starting", "running", "stopping", "lost"]),
    heartbeat_age=st.one_of(st.none(), st.floats(0, 2 * FRESH)),
    free_ram=st.floats(0, 64000),
    free_cpu=st.floats(0, 64000),
    vms=st.integers(0, 50),
)


def unique(cands: list[Candidate]) -> list[Candidate]:
    return list({c.host_id: c for c in cands}.values())


def is_fit(c: Candidate) -> bool:
    return (c.backend and not c.blocked and c.state == "running"
            and c.heartbeat_age is not None and c.heartbeat_age <= FRESH)


class PropertyTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(hosts, max_size=8).map(unique), st.sampled_from(["default", "random"]),
           st.floats(0, 5), st.floats(0, 5), st.floats(0, 1000), st.integers())
    def test_never_picks_an_unfit_host(self, cands, plugin, w_ram, w_cpu, w_random, seed):
        cfg = weights(w_ram, w_cpu, w_random, plugin)
        fit = {c.host_id for c in cands if is_fit(c)}
        if not fit:
            self.assertRaises(NoHostAvailable, choose_host, cfg, VM, cands, random.Random(seed))
        else:
            self.assertIn(choose_host(cfg, VM, cands, random.Random(seed)), fit)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(hosts, min_size=1, max_size=8).map(unique), st.floats(0, 5), st.floats(0, 5),
           st.integers(), st.integers())
    def test_without_random_weight_the_choice_is_deterministic(self, cands, w_ram, w_cpu, s1, s2):
        cfg = weights(w_ram, w_cpu, 0)
        if not eligible(cands, FRESH):
            return
        self.assertEqual(choose_host(cfg, VM, cands, random.Random(s1)),
                         choose_host(cfg, VM, cands, random.Random(s2)))

    @settings(max_examples=200, deadline=None)
    @given(st.floats(1, 64000), st.floats(1, 64000), st.floats(1, 64000), st.floats(1, 64000),
           st.integers(0, 20), st.integers(0, 20))
    def test_the_best_score_wins(self, ram_a, cpu_a, ram_b, cpu_b, vms_a, vms_b):
        """(w_ram·ram + w_cpu·cpu) / (vms + 1), highest first, for any weights."""
        a = Candidate(1, "a", True, False, "running", 1.0, ram_a, cpu_a, vms_a)
        b = Candidate(2, "b", True, False, "running", 1.0, ram_b, cpu_b, vms_b)
        for w_ram, w_cpu in ((1, 0), (0, 1), (2, 3)):
            score = {c.host_id: (w_ram * c.free_ram + w_cpu * c.free_cpu) / (c.vms + 1)
                     for c in (a, b)}
            expected = 1 if score[1] >= score[2] else 2
            self.assertEqual(choose_host(weights(w_ram, w_cpu, 0), VM, [a, b]), expected)


class WeightTests(unittest.TestCase):
    """The manual: more weight on RAM prefers free RAM, on CPU free CPU, on random spreads."""

    ram_rich = Candidate(1, "ram", True, False, "running", 1.0, 30000.0, 1000.0, 0)
    cpu_rich = Candidate(2, "cpu", True, False, "running", 1.0, 1000.0, 30000.0, 0)

    def test_weights_change_the_choice(self):
        pair = [self.ram_rich, self.cpu_rich]
        self.assertEqual(choose_host(weights(3, 1, 0), VM, pair), 1)
        self.assertEqual(choose_host(weights(1, 3, 0), VM, pair), 2)

    def test_assigned_vms_divide_the_score(self):
        busy = Candidate(1, "busy", True, False, "running", 1.0, 30000.0, 30000.0, 9)
        idle = Candidate(2, "idle", True, False, "running", 1.0, 10000.0, 10000.0, 0)
        self.assertEqual(choose_host(weights(1, 1, 0), VM, [busy, idle]), 2)

    def test_a_large_random_weight_spreads_the_choice(self):
        rng = random.Random(7)
        pair = [self.ram_rich, self.cpu_rich]
        picks = {choose_host(weights(1, 1, 1e9), VM, pair, rng) for _ in range(50)}
        self.assertEqual(picks, {1, 2})

    def test_random_plugin_uses_every_fit_host(self):
        rng = random.Random(1)
        pair = [self.ram_rich, self.cpu_rich]
        self.assertEqual({choose_host(weights(1, 1, 0, "random"), VM, pair, rng)
                          for _ in range(50)}, {1, 2})

    def test_unknown_plugin_is_a_clear_error(self):
        e = self.assertRaises(NoHostAvailable, choose_host, weights(1, 1, 0, "nope"), VM,
                              [self.ram_rich])
        self.assertIn("unknown load balancer plugin 'nope'", str(e))
        self.assertIn("default", str(e))

    def test_candidate_rows(self):
        """``LB_CANDIDATES`` on a real QVD-DB: a host that never beat has no heartbeat age
        and no free RAM or CPU (0), and its VMs are counted."""
        db = new_database()
        self.addCleanup(drop_database, db)
        host = db.query("INSERT INTO hosts (name, address, frontend, backend)"
                        " VALUES ('n', '10.0.0.5', TRUE, TRUE) RETURNING id")[0][0]
        db.query("INSERT INTO host_runtimes (host_id, state, blocked, usable_cpu)"
                 " VALUES (%s, 'running', FALSE, 2.5)", (host,))
        [row] = db.query(LB_CANDIDATES)
        self.assertEqual(candidates([row]),
                         [Candidate(host, "n", True, False, "running", None, 0.0, 2.5, 0)])


CUSTOM_PLUGIN = """
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from qvd.loadbalancer import ILoadBalancer

    @implementer(IPlugin, ILoadBalancer)
    class Preferred:
        \"\"\"The manual's typical case: a dedicated set of nodes first.\"\"\"
        name = "preferred"

        def get_free_host(self, config, vm, candidates, rng):
            favourites = [c for c in candidates if c.name.startswith("fast")]
            return min(favourites or candidates, key=lambda c: c.host_id).host_id

    preferred = Preferred()
"""


class CustomPluginTests(unittest.TestCase):
    def test_a_plugin_installed_beside_ours_is_found_by_name(self):
        """As the manual promises: drop a plugin in, name it in l7r.loadbalancer.plugin."""
        install_plugin(self, "qvd_test_preferred_lb", CUSTOM_PLUGIN)
        hosts = [Candidate(1, "slow", True, False, "running", 1.0, 9e4, 9e4, 0),
                 Candidate(2, "fast-1", True, False, "running", 1.0, 1.0, 1.0, 5),
                 Candidate(3, "fast-2", True, True, "running", 1.0, 1.0, 1.0, 0)]
        self.assertEqual(choose_host(weights(1, 1, 0, "preferred"), VM, hosts), 2)
        self.assertEqual(choose_host(weights(1, 1, 0, "default"), VM, hosts), 1)
