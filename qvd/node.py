"""``twistd qvd-node``: what a real node runs, the HKD and the L7R in one reactor
(with ``--api``, the administration API too)."""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.python import usage

from qvd.hkd import service as hkd
from qvd.l7r import service as l7r


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "node.conf to read (default $QVD_CONFIG or /etc/qvd/node.conf)"],
    ]
    optFlags = [["api", None, "also serve the administration API (as twistd qvd-api)"]]


def makeService(options: Options) -> MultiService:
    node = MultiService()
    node.setName("qvd-node")
    hkd.makeService({"config": options["config"]}).setServiceParent(node)
    l7r.makeService({"config": options["config"], "worker": False}).setServiceParent(node)
    if options["api"]:
        from qvd.api import service as api
        api.makeService({"config": options["config"], "port": None,
                         "plain": False}).setServiceParent(node)
    return node
