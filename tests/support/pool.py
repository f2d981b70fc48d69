"""Trial test cases on a fresh deployed database with ``qvd.db.pool.Database`` pools."""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from twisted.trial import unittest

from qvd.config import Config
from qvd.db.pool import Database
from tests.support.postgres import drop_database, new_database


class PoolTestCase(unittest.TestCase):
    """Each test gets its own database (``self.db``), dropped after it, and every pool
    it starts is closed before that, so no test leaks connections into the next."""

    def setUp(self) -> None:
        self.db = new_database()
        self.addCleanup(drop_database, self.db)

    @defer.inlineCallbacks
    def start_pool(self, config: Config, name: str,
                   **kwargs: Any) -> Generator[Any, Any, Database]:
        database = Database(config, name, **kwargs)
        self.addCleanup(database.close)
        yield database.start()
        return database
