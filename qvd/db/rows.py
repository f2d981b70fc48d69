"""Query results as row models: each SQL that returns rows has a frozen dataclass next to
it whose fields are its columns, in order, and callers get those, not tuples."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, TypeVar

Model = TypeVar("Model")
Rows = Sequence[Sequence[Any]]


def first(model: Callable[..., Model]) -> Callable[[Rows], Optional[Model]]:
    """The first row as ``model``, None for no rows (a callback for ``run_query``)."""
    return lambda rows: model(*rows[0]) if rows else None


def each(model: Callable[..., Model]) -> Callable[[Rows], list[Model]]:
    """Every row as ``model``."""
    return lambda rows: [model(*row) for row in rows]


def column(rows: Rows) -> list[Any]:
    """The values of a one-column result."""
    return [row[0] for row in rows]


# Prefix of a one-statement transaction (one round trip: psycopg2 sends both in one
# query) whose correctness rests on row locks and conditional updates rather than on
# SERIALIZABLE: rows every request touches (``host_counters``) or that contending
# clients fight over (a VM's session) would otherwise fail with 40001 and be retried
# after a backoff.
READ_COMMITTED = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; "
