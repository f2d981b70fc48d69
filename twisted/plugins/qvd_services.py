"""The node's daemons as twistd plugins: ``twistd qvd-vma|qvd-hkd|qvd-l7r|qvd-node``.

Each module named here provides ``Options`` and ``makeService``; Twisted's
``ServiceMaker`` imports it only when its command is run.
"""

from twisted.application.service import ServiceMaker

vma = ServiceMaker("QVD VMA", "qvd.vma.service",
                   "QVD VM agent: SimpleRPC on port 3030, nxagent sessions, hooks", "qvd-vma")
hkd = ServiceMaker("QVD HKD", "qvd.hkd.service",
                   "QVD house-keeping daemon: host heartbeat, VM state machine, monitors",
                   "qvd-hkd")
l7r = ServiceMaker("QVD L7R", "qvd.l7r.service",
                   "QVD L7R: the clients' TLS entry point on port 8443, and the NX splice",
                   "qvd-l7r")
node = ServiceMaker("QVD node", "qvd.node",
                    "QVD node: house-keeping daemon and L7R broker sharing one reactor",
                    "qvd-node")
api = ServiceMaker("QVD API", "qvd.api.service",
                   "QVD administration API: /api, sessions, ACLs, live updates on /api/ws",
                   "qvd-api")
