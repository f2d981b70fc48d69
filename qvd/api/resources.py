"""The endpoints under ``/api`` beside the action endpoint: ``ws`` and ``di/*``."""

from __future__ import annotations

from twisted.web import resource

from qvd.api import ws
from qvd.api.di import DiResource
from qvd.api.dispatch import API


def children(api: API) -> dict[bytes, resource.Resource]:
    return {b"ws": ws.resource(api), b"di": DiResource(api)}
