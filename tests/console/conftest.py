"""One node (HKD, L7R and API with its console) on one QVD-DB, and one headless Chromium,
for the whole module: each test logs in afresh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import Session
from tests.support.browser import Browser
from tests.support.console import ConsoleNode
from tests.support.postgres import drop_database, new_database


@pytest.fixture(scope="module")
def node() -> Iterator[ConsoleNode]:
    db = new_database()
    running = ConsoleNode(db)
    try:
        yield running.start()
    finally:
        running.destroy()
        drop_database(db)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = Browser(1280, 800)
    try:
        yield chromium
    finally:
        chromium.quit()


@pytest.fixture(scope="module")
def superadmin(node: ConsoleNode) -> Session:
    return node.login("superadmin", "superadmin", "*")
