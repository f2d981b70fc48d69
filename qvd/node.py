"""``twistd qvd-node``: what a real node runs, the HKD and the L7R in one reactor (with
``--api``, the administration API too), sharing one configuration, database pool and
LISTEN connection (``NodeDaemon``).

The daemon stops its services last first: the API, the L7R (its sessions cut and their
rows reset), then the HKD (the VMs stopped), then it closes the database.  SIGHUP (or
``qvd-node reload``) reloads the L7R alone (``qvd.l7r.reload``): the HKD and its VMs
run on.
"""

from __future__ import annotations

from twisted.python import usage

from qvd.api.service import APIService
from qvd.daemon import STARTUP_ERRORS, NodeDaemon, cannot_start, for_twistd, prepare
from qvd.daemon import Options as DaemonOptions
from qvd.hkd.service import HKDService, prepare_hkd
from qvd.l7r.reload import ReloadControl
from qvd.l7r.service import L7RService
from qvd.l7r.tls import TLSConfigError, server_context


class Options(DaemonOptions):
    optFlags = [["api", None, "also serve the administration API (as twistd qvd-api)"]]


def makeService(options: usage.Options) -> NodeDaemon:
    try:
        config, host_id = prepare(options["config"], "qvd-node")
        prepare_hkd(config)
        tls = server_context(config) if config.get_bool("l7r.use_ssl") else None
        daemon = for_twistd(NodeDaemon(config, host_id, "qvd-node"), options)
        HKDService(daemon).setServiceParent(daemon)
        l7r = L7RService(daemon, tls=tls)
        l7r.setServiceParent(daemon)
        ReloadControl(l7r.reload, config, daemon.reactor).setServiceParent(daemon)
        if options["api"]:
            APIService(daemon).setServiceParent(daemon)
    except (*STARTUP_ERRORS, TLSConfigError, ValueError) as e:
        raise cannot_start("qvd-node", e) from None
    return daemon
