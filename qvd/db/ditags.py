"""Disk-image tags: the rule by which a tag moves to a DI, shared by ``qa`` (direct
database mode, psycopg2) and the API (txpostgres), which each run the statements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

# The DIs of one OSF holding a tag (the invariant: at most one): (di_tags id, DI id, fixed).
TAG_HOLDERS = ("SELECT dt.id, dt.di_id, dt.fixed FROM di_tags dt JOIN dis d"
               " ON d.id = dt.di_id WHERE d.osf_id = %s AND dt.tag = %s")
DROP_TAGS = "DELETE FROM di_tags WHERE id = ANY(%s)"


@dataclass(frozen=True)
class Takeover:
    """What moving a tag to a DI takes: the di_tags rows to drop, and whether to add it."""

    drop: list[int]
    add: bool


def takeover(holders: Sequence[Sequence], di_id: int,
             refuse: Callable[[int], Exception]) -> Takeover:
    """How ``di_id`` takes a tag from the OSF's other DIs: nothing to do if it holds the
    tag already; ``refuse(owner)`` is raised if another DI holds it fixed."""
    drop = []
    for tag_id, owner, fixed in holders:
        if owner == di_id:
            return Takeover(drop, add=False)
        if fixed:
            raise refuse(owner)
        drop.append(tag_id)
    return Takeover(drop, add=True)
