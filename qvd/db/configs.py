"""The ``configs`` and ``ssl_configs`` tables: configuration that overrides node.conf."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.config import Config
from qvd.db.pool import Database

ConfigRows = list[tuple[int, str, str]]  # (tenant_id, key, value), what Config takes
SslRows = list[tuple[str, str]]  # (key, value)

CONFIG_ROWS = "SELECT tenant_id, key, value FROM configs"
SSL_ROWS = "SELECT key, value FROM ssl_configs"


def apply_configs_now(conn: Any, config: Config) -> None:
    """Lay the configs and ssl_configs tables over ``config`` on a blocking connection
    (command-line tools, and daemons before their reactor runs)."""
    with conn, conn.cursor() as cur:
        cur.execute(CONFIG_ROWS)
        rows = cur.fetchall()
        cur.execute(SSL_ROWS)
        config.replace_db_rows(rows, cur.fetchall())


def load_configs(db: Database) -> defer.Deferred[tuple[ConfigRows, SslRows]]:
    """Every ``configs`` row (all tenants) and every ``ssl_configs`` row, from one snapshot."""
    return db.run_interaction(_read_configs)


@defer.inlineCallbacks
def _read_configs(cursor: Cursor) -> Generator[defer.Deferred[Any], Any, tuple[ConfigRows, SslRows]]:
    yield cursor.execute(CONFIG_ROWS)
    rows = cursor.fetchall()
    yield cursor.execute(SSL_ROWS)
    return rows, cursor.fetchall()
