"""Choosing the host a stopped VM starts on (QVD 4's L7R load balancer).

The choice is a pure function over candidate hosts, so the blocking ``qa``
and the asynchronous L7R share it: each fetches them its own way (the SQL is
``qvd.db.hosts.LB_CANDIDATES``, its rows ``Candidate``s) and calls ``choose_host``.

Unlike QVD 4, hosts whose heartbeat is stale are never candidates, and the
plugin only ever sees eligible hosts, so no plugin (built-in or custom) can
pick a blocked, stopped or silent host.  Plugins are found by name among
``twisted.plugin`` providers of ``ILoadBalancer`` (``l7r.loadbalancer.plugin``).

Writing one (the manual's "customized QVD load balancer"): in a module of a
``twisted/plugins/`` directory on the Python path, define an object providing
``IPlugin`` and ``ILoadBalancer`` with a ``name`` and
``get_free_host(config, vm, candidates, rng) -> host id``; set
``l7r.loadbalancer.plugin`` to that name.  ``vm`` is a ``VMInfo``; the
candidates are the eligible hosts as ``Candidate``s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from twisted.plugin import getPlugins
from zope.interface import Attribute, Interface

from qvd.config import Config
from qvd.db.hosts import Candidate

PLUGIN_KEY = "l7r.loadbalancer.plugin"
FRESHNESS_KEY = "internal.hkd.cluster.node.timeout"


class NoHostAvailable(Exception):
    """No host can take the VM now; the message says why."""


@dataclass(frozen=True)
class VMInfo:
    """The VM being placed (what QVD 4 passed as ``$vm``)."""

    id: int
    name: str
    user_id: int
    osf_id: int
    di_tag: str


class ILoadBalancer(Interface):
    """A load balancing plugin, registered as a ``twisted.plugin`` provider."""

    name = Attribute("The value of l7r.loadbalancer.plugin that selects this plugin.")

    def get_free_host(
        config: Config, vm: VMInfo, candidates: Sequence[Candidate], rng: random.Random
    ) -> int:
        """The id of the host ``vm`` should start on, among eligible ``candidates``
        (never empty); ``rng`` is the only source of randomness to use."""


def eligible(candidates: Iterable[Candidate], max_age: float) -> list[Candidate]:
    """Running, backend, unblocked hosts with a heartbeat younger than ``max_age``."""
    return [
        c for c in candidates
        if c.backend and not c.blocked and c.state == "running"
        and c.heartbeat_age is not None and c.heartbeat_age <= max_age
    ]


def find_plugin(name: str) -> ILoadBalancer:
    name = name.strip()
    found = {plugin.name: plugin for plugin in getPlugins(ILoadBalancer)}
    if name not in found:
        raise NoHostAvailable(
            f"unknown load balancer plugin {name!r} (installed: {', '.join(sorted(found))})")
    return found[name]


def choose_host(
    config: Config,
    vm: VMInfo,
    candidates: Iterable[Candidate],
    rng: Optional[random.Random] = None,
) -> int:
    """The host id for ``vm`` by the configured plugin; ``NoHostAvailable`` if none fits."""
    hosts = eligible(candidates, config.get_float(FRESHNESS_KEY))
    if not hosts:
        raise NoHostAvailable("no host available: none is running, unblocked and alive")
    plugin = find_plugin(config.get(PLUGIN_KEY))
    chosen = plugin.get_free_host(config, vm, hosts, rng or random.Random())
    if chosen not in {h.host_id for h in hosts}:
        raise NoHostAvailable(f"load balancer {plugin.name!r} chose an ineligible host {chosen}")
    return chosen
