"""One statement on a blocking connection of its own, for the tools and fixtures that
reach QVD-DB outside a reactor (``qvd-farm``, the bench scripts, the test suite's
database); never from a daemon once its reactor runs."""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

from qvd.config import Config
from qvd.db import connect_sync


def query_once(config: Config, statement: str,
               params: Union[Sequence[Any], Mapping[str, Any]] = (),
               application_name: str = "qvd") -> list[tuple]:
    """Run ``statement`` in its own transaction, committed (or rolled back) and the
    connection closed before it returns; its rows if it returns any."""
    conn = connect_sync(config, application_name)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
