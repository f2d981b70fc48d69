"""The suite's PostgreSQL: one real server per test session, one database per test.

The server is Debian's PostgreSQL, started in a temporary directory on a
free loopback port (as ``postgres`` when the suite runs as root).  The QVD
schema is deployed once into a template database; every test gets a fresh
copy (``CREATE DATABASE ... TEMPLATE``), so tests never see each other's rows.
"""

from __future__ import annotations

import atexit
import itertools
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import psycopg2

from qvd.config import Config, parse_properties
from qvd.db import connect_sync
from qvd.db.deploy import deploy
from qvd.db.oneshot import query_once
from qvd.pgcluster import LocalCluster
from qvd.stream.sockets import free_port

USER = "qvd"
PASSWORD = "qvd-test-password"
TEMPLATE = "qvd_template"

_cluster: Optional[LocalCluster] = None
_counter = itertools.count(1)


def cluster() -> LocalCluster:
    """The session's server, started on first use and destroyed at exit."""
    global _cluster
    if _cluster is None:
        root = tempfile.mkdtemp(prefix="qvd-test-pg-")
        candidate = LocalCluster(root=os.path.join(root, "cluster"), port=free_port())
        os.chmod(root, 0o755)
        candidate.init()
        candidate.mark_temporary()
        candidate.start()
        atexit.register(candidate.destroy)
        candidate.ensure_role_and_database(USER, PASSWORD, TEMPLATE)
        candidate.psql(f'ALTER ROLE "{USER}" CREATEDB')
        _cluster = candidate
        conn = connect_sync(TestDatabase(TEMPLATE).config())
        try:
            deploy(conn)
        finally:
            conn.close()
    return _cluster


@dataclass
class TestDatabase:
    """One database of the session's server, with a node.conf that reaches it."""

    name: str

    def conf_text(self, extra: str = "") -> str:
        c = cluster()
        return (
            f"nodename = test-node\n"
            f"database.host = {c.host}\n"
            f"database.port = {c.port}\n"
            f"database.name = {self.name}\n"
            f"database.user = {USER}\n"
            f"database.password = {PASSWORD}\n"
        ) + extra

    def config(self, extra: str = "") -> Config:
        return Config(parse_properties(self.conf_text(extra)))

    def write_conf(self, directory: str, extra: str = "") -> str:
        path = os.path.join(directory, "node.conf")
        with open(path, "w") as f:
            f.write(self.conf_text(extra))
        return path

    def connect(self) -> "psycopg2.extensions.connection":
        return connect_sync(self.config(), "qvd-tests")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run one statement in its own transaction; rows if it returns any."""
        return query_once(self.config(), sql, params, "qvd-tests")


def new_database(deployed: bool = True) -> TestDatabase:
    """A fresh database: a copy of the deployed template, or an empty one."""
    c = cluster()
    name = f"qvd_test_{os.getpid()}_{next(_counter)}"
    template = TEMPLATE if deployed else "template0"
    c.psql(f'CREATE DATABASE "{name}" OWNER "{USER}" TEMPLATE "{template}"')
    if deployed:  # database-level settings are not copied from a template
        c.psql(f'ALTER DATABASE "{name}" SET default_transaction_isolation TO serializable')
    return TestDatabase(name)


def drop_database(db: TestDatabase) -> None:
    if _cluster is not None:
        _cluster.psql(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
