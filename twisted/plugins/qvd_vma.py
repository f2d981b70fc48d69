"""twistd plugin ``qvd-vma``: the agent inside each VM (loaded lazily from qvd.vma.service)."""

from twisted.application.service import ServiceMaker

serviceMaker = ServiceMaker(
    "QVD VMA",
    "qvd.vma.service",
    "QVD VM agent: SimpleRPC on port 3030, nxagent sessions, hooks",
    "qvd-vma",
)
