"""``qvd-deploy-db`` against a fresh empty database (reference §1.1).

Deploys, refuses a second deployment without ``--force`` (leaving the data
alone), wipes and recreates with ``--force``, and fails with one clear line
(no traceback) when the database cannot be reached.  Most cases call
``qvd.db.deploy.main`` in-process; one runs the real ``python -m`` path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvd.db.deploy import main
from qvd.stream.sockets import free_port
from tests import test_schema_catalogue as catalogue
from tests.support.paths import ROOT
from tests.support.postgres import TestDatabase as Database, drop_database, new_database

INITIAL_TENANTS = [(-1, "-"), (0, "*"), (1, "default")]


@pytest.fixture
def empty() -> Iterator[Database]:
    db = new_database(deployed=False)
    try:
        yield db
    finally:
        drop_database(db)


def one_error_line(stderr: str) -> str:
    """The single ``qvd-deploy-db: ...`` line a failure must print."""
    assert "Traceback" not in stderr, f"traceback on stderr:\n{stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("qvd-deploy-db: "), f"unprefixed error line: {lines[0]!r}"
    return lines[0]


def deploy_ok(conf: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    status = main(["-c", conf, *extra])
    out, err = capsys.readouterr()
    assert (status, err) == (0, ""), f"deploy failed ({status}): {err}"
    return out


def insert_user(db: Database, login: str) -> int:
    return db.query("INSERT INTO users (tenant_id, login) VALUES (1, %s) RETURNING id", (login,))[0][0]


def test_deploys_into_an_empty_database(
        empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert empty.query("SELECT to_regclass('public.configs')") == [(None,)]
    assert empty.query("SHOW default_transaction_isolation") != [("serializable",)]

    out = deploy_ok(empty.write_conf(str(tmp_path)), capsys)

    assert empty.name in out and "4.3.0" in out, f"message does not name the database: {out!r}"
    assert empty.query("SELECT component, version FROM versions") == [("schema", "4.3.0")]
    assert empty.query("SELECT id, name FROM tenants ORDER BY id") == INITIAL_TENANTS
    # ALTER DATABASE ... SET default_transaction_isolation: seen by every new session
    assert empty.query("SHOW default_transaction_isolation") == [("serializable",)]
    # the CLI-deployed database matches the reference catalogue too
    catalogue.test_columns_types_nullability_defaults(empty)
    catalogue.test_primary_keys(empty)
    catalogue.test_unique_constraints(empty)
    catalogue.test_foreign_keys(empty)
    catalogue.test_indexes(empty)
    catalogue.test_enum_types_and_labels_in_order(empty)
    catalogue.test_triggers(empty)
    catalogue.test_lookup_rows(empty)
    catalogue.test_sequences_start_at_10000_or_after_initial_rows(empty)


def test_second_deploy_is_refused_and_keeps_the_data(
        empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = empty.write_conf(str(tmp_path))
    deploy_ok(conf, capsys)
    user_id = insert_user(empty, "keep-me")

    status = main(["-c", conf])
    out, err = capsys.readouterr()

    assert status == 1
    assert out == ""
    line = one_error_line(err)
    assert "--force" in line, f"refusal does not mention --force: {line!r}"
    assert empty.name in line, f"refusal does not name the database: {line!r}"
    assert empty.query("SELECT id, login FROM users") == [(user_id, "keep-me")]
    assert empty.query("SELECT count(*) FROM tenants") == [(3,)]


def test_force_wipes_and_recreates_a_fresh_schema(
        empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = empty.write_conf(str(tmp_path))
    deploy_ok(conf, capsys)
    assert insert_user(empty, "doomed") == catalogue.FIRST_ID
    empty.query("INSERT INTO tenants (name) VALUES ('acme')")
    empty.query("INSERT INTO configs (tenant_id, key, value) VALUES (1, 'l7r.port', '443')")

    out = deploy_ok(conf, capsys, "--force")

    assert empty.name in out
    assert empty.query("SELECT count(*) FROM users") == [(0,)]
    assert empty.query("SELECT id, name FROM tenants ORDER BY id") == INITIAL_TENANTS
    assert empty.query("SELECT tenant_id, key FROM configs WHERE tenant_id <> -1") == []
    assert empty.query("SELECT component, version FROM versions") == [("schema", "4.3.0")]
    assert empty.query("SHOW default_transaction_isolation") == [("serializable",)]
    # every sequence back at 10000 (tenants at 2); this consumes one id of each
    catalogue.test_sequences_start_at_10000_or_after_initial_rows(empty)


def run_with(empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             key: str, value: str) -> tuple[int, str, str]:
    """qvd-deploy-db on the test database's node.conf with ``key`` set to ``value``:
    (status, stdout, stderr)."""
    text = "".join(
        f"{key} = {value}\n" if line.startswith(key) else line
        for line in empty.conf_text().splitlines(keepends=True)
    )
    conf = tmp_path / "node.conf"
    conf.write_text(text)
    status = main(["-c", str(conf)])
    out, err = capsys.readouterr()
    return status, out, err


def test_wrong_password_is_one_clear_line(
        empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_with(empty, tmp_path, capsys, "database.password", "not-the-password")

    assert (status, out) == (1, "")
    line = one_error_line(err)
    assert "password" in line.lower(), f"does not say the password was refused: {line!r}"
    assert empty.query("SELECT to_regclass('public.configs')") == [(None,)], "deployed anyway"


def test_unreachable_server_is_one_clear_line(
        empty: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    status, out, err = run_with(empty, tmp_path, capsys, "database.port", str(port))

    assert (status, out) == (1, "")
    line = one_error_line(err)
    assert str(port) in line, f"does not say where it tried to connect: {line!r}"


def test_missing_config_file_is_one_clear_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["-c", str(tmp_path / "absent.conf")])
    out, err = capsys.readouterr()
    assert (status, out) == (1, "")
    one_error_line(err)


def test_console_script_path_as_a_subprocess(empty: Database, tmp_path: Path) -> None:
    conf = empty.write_conf(str(tmp_path))
    command = [sys.executable, "-m", "qvd.db.deploy", "-c", conf]
    env = {k: v for k, v in os.environ.items() if k != "QVD_CONFIG"}

    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, f"deploy failed:\n{first.stderr}"
    assert empty.name in first.stdout and first.stderr == ""

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and second.stdout == ""
    assert "--force" in one_error_line(second.stderr)
    assert empty.query("SELECT count(*) FROM tenants") == [(3,)]
