"""QVD-DB: connection parameters shared by the CLI tools and the daemons."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions

from qvd.config import Config, ConfigError

SCHEMA_VERSION = "4.3.0"
SCHEMA_VERSIONS = "SELECT version FROM versions WHERE component = 'schema'"
SERIALIZATION_FAILURE = "40001"


class DatabaseError(Exception):
    """The database cannot be reached or used; the message says why."""


def connect_kwargs(config: Config, application_name: str = "qvd") -> dict[str, Any]:
    """libpq keyword arguments from ``database.*`` (file-only keys).

    Every session runs in UTC, as QVD 4's do, so ``timestamp`` columns
    written with ``now()`` mean the same thing on every node.
    """
    kwargs: dict[str, Any] = {
        "host": config.get("database.host"),
        "dbname": config.get("database.name"),
        "user": config.get("database.user"),
        "connect_timeout": config.get_int("internal.database.client.connect.timeout"),
        "application_name": application_name,
        "options": "-c timezone=UTC",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    if config.has("database.port"):
        kwargs["port"] = config.get_int("database.port")
    if config.has("database.password"):
        kwargs["password"] = config.get("database.password")
    return kwargs


def describe(kwargs: dict[str, Any]) -> str:
    where = kwargs["host"] + (f":{kwargs['port']}" if "port" in kwargs else "")
    return f"database {kwargs['dbname']!r} on {where} as {kwargs['user']!r}"


def connect_sync(config: Config, application_name: str = "qvd") -> "psycopg2.extensions.connection":
    """A blocking connection, for command-line tools and for a daemon's start-up checks
    before its reactor runs (never once it does)."""
    try:
        kwargs = connect_kwargs(config, application_name)
    except ConfigError as e:
        raise DatabaseError(str(e)) from None
    try:
        return psycopg2.connect(**kwargs)
    except psycopg2.OperationalError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else "connection failed"
        raise DatabaseError(f"cannot connect to {describe(kwargs)}: {first_line}") from None
