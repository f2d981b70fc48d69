"""One QVD-DB and one real ``twistd qvd-api`` (TLS, loopback) per test module."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest

from tests.support.api import RunningAPI
from tests.support.postgres import drop_database, new_database


@pytest.fixture(scope="module")
def api() -> Iterator[RunningAPI]:
    db = new_database()
    running = RunningAPI(db, tempfile.mkdtemp(prefix="qvd-api-test-")).start()
    yield running
    running.stop()
    drop_database(db)


@pytest.fixture(scope="module")
def superadmin(api: RunningAPI):
    return api.login("superadmin", "superadmin", "*")
