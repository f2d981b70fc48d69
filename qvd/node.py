"""``twistd qvd-node``: what a real node runs, the HKD and the L7R in one reactor."""

from __future__ import annotations

from typing import Any, Generator

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.python import usage

from qvd.hkd import service as hkd
from qvd.l7r import service as l7r


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "node.conf to read (default $QVD_CONFIG or /etc/qvd/node.conf)"],
    ]


class NodeService(MultiService):
    """The node's services, stopped one after the other in reverse order: the L7R
    first (its sessions cut and their rows reset), then the HKD (the VMs stopped),
    each with its database still open."""

    @defer.inlineCallbacks
    def stopService(self) -> Generator[defer.Deferred[Any], Any, None]:
        Service.stopService(self)
        for service in reversed(list(self)):
            yield service.stopService()


def makeService(options: Options) -> MultiService:
    node = NodeService()
    node.setName("qvd-node")
    hkd.makeService({"config": options["config"]}).setServiceParent(node)
    l7r.makeService({"config": options["config"], "worker": False}).setServiceParent(node)
    return node
