"""The built-in load balancers: ``default`` (weighted free resources) and ``random``.

Registered for ``twisted.plugin`` in ``twisted/plugins/qvd_loadbalancers.py``.
"""

from __future__ import annotations

import random
from typing import Sequence

from twisted.plugin import IPlugin
from zope.interface import implementer

from qvd.config import Config
from qvd.loadbalancer import Candidate, ILoadBalancer, VMInfo

WEIGHT_KEY = "l7r.loadbalancer.plugin.default.weight.{}"


@implementer(IPlugin, ILoadBalancer)
class DefaultLoadBalancer:
    """QVD 4's score on live resources: ``(w_ram·free_ram + w_cpu·free_cpu) / (vms + 1)
    + U[0, w_random)``; the highest score wins, ties go to the lowest host id."""

    name = "default"

    def get_free_host(
        self, config: Config, vm: VMInfo, candidates: Sequence[Candidate], rng: random.Random
    ) -> int:
        w_ram, w_cpu, w_random = (
            config.get_float(WEIGHT_KEY.format(k)) for k in ("ram", "cpu", "random"))

        def score(host: Candidate) -> tuple[float, int]:
            capacity = (w_ram * host.free_ram + w_cpu * host.free_cpu) / (host.vms + 1)
            noise = rng.uniform(0, w_random) if w_random > 0 else 0.0
            return capacity + noise, -host.host_id

        return max(candidates, key=score).host_id


@implementer(IPlugin, ILoadBalancer)
class RandomLoadBalancer:
    """Any eligible host, uniformly (the manual's minimum example)."""

    name = "random"

    def get_free_host(
        self, config: Config, vm: VMInfo, candidates: Sequence[Candidate], rng: random.Random
    ) -> int:
        return rng.choice(list(candidates)).host_id
