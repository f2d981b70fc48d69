"""``qvd-deploy-db``: create the QVD-DB schema 4.3.0 in an empty database."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Optional, Sequence

from qvd.config import Config, ConfigError
from qvd.db import SCHEMA_VERSION, SCHEMA_VERSIONS, DatabaseError, connect_sync

FIRST_ID = 10000


class AlreadyDeployed(DatabaseError):
    """The database already holds a QVD schema and --force was not given."""


def schema_sql() -> str:
    """The tables, views and triggers, then QVD 4's initial administration data."""
    files = resources.files("qvd.db")
    return "\n".join(files.joinpath(name).read_text(encoding="utf-8")
                     for name in ("schema.sql", "admin_data.sql"))


def deployed_version(conn) -> Optional[str]:
    """The schema version found, '' for a QVD schema without one, None if empty."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.configs') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT to_regclass('public.versions') IS NOT NULL")
        if not cur.fetchone()[0]:
            return ""
        cur.execute(SCHEMA_VERSIONS)
        row = cur.fetchone()
        return row[0] if row else ""


def _reset_sequences(cur) -> None:
    """Every serial sequence restarts after its table's highest id, or at 10000."""
    cur.execute(
        """
        SELECT s.relname, t.relname, a.attname
          FROM pg_class s
          JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a'
          JOIN pg_class t ON t.oid = d.refobjid
          JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
          JOIN pg_namespace n ON n.oid = s.relnamespace
         WHERE s.relkind = 'S' AND n.nspname = 'public'
        """
    )
    for sequence, table, column in cur.fetchall():
        cur.execute(
            f'SELECT setval(%s, COALESCE((SELECT max("{column}") + 1 FROM "{table}"), %s), false)',
            (sequence, FIRST_ID),
        )


def deploy(conn, force: bool = False) -> None:
    """Deploy the schema in one transaction; refuse a deployed DB unless ``force``."""
    found = deployed_version(conn)
    conn.rollback()
    if found is not None and not force:
        version = f" (schema {found})" if found else ""
        raise AlreadyDeployed(
            f"database {conn.info.dbname!r} already holds a QVD schema{version};"
            " use --force to wipe it and deploy a fresh one"
        )
    with conn:
        with conn.cursor() as cur:
            if force:
                cur.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
            cur.execute(
                "DO $$ BEGIN EXECUTE format("
                "'ALTER DATABASE %I SET default_transaction_isolation TO serializable',"
                " current_database()); END $$"
            )
            cur.execute(schema_sql())
            _reset_sequences(cur)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qvd-deploy-db",
        description=f"Create the QVD-DB schema {SCHEMA_VERSION} in the database named by node.conf.",
    )
    parser.add_argument("-c", "--config", help="node.conf to read (default: $QVD_CONFIG or /etc/qvd/node.conf)")
    parser.add_argument("--force", action="store_true", help="wipe an existing database first")
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
        conn = connect_sync(config, "qvd-deploy-db")
        try:
            deploy(conn, args.force)
            print(f"QVD-DB schema {SCHEMA_VERSION} deployed into database"
                  f" {conn.info.dbname!r} on {conn.info.host}:{conn.info.port}")
        finally:
            conn.close()
    except (ConfigError, DatabaseError) as e:
        print(f"qvd-deploy-db: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # psycopg2 errors: one line, no traceback
        print(f"qvd-deploy-db: deployment failed: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
