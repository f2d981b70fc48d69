"""The endpoints under ``/api`` beside the action endpoint: ``ws`` and ``di/*``."""

from __future__ import annotations

from twisted.web import resource

from qvd.api.dispatch import API


def children(api: API) -> dict[bytes, resource.Resource]:
    return {}
