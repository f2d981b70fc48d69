"""LISTEN/NOTIFY and live configuration reload against the suite's real PostgreSQL."""

from __future__ import annotations

from typing import Any, Generator

import os
import sys

from twisted.internet import defer, utils
from twisted.trial import unittest

from qvd.config import Config
from qvd.configwatch import ConfigWatcher
from qvd.db.listener import Listener
from qvd.db.pool import Database
from tests.support.postgres import cluster, drop_database, new_database
from tests.test_db_pool import RecordingClock, config_for

BACKOFFS = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]


class ListenerTests(unittest.TestCase):
    def setUp(self) -> None:
        self.db = new_database()
        self.addCleanup(drop_database, self.db)

    @defer.inlineCallbacks
    def started(self, **kwargs: Any) -> Generator[Any, Any, Listener]:
        listener = Listener(config_for(self.db), "qvd-test-listener", **kwargs)
        self.addCleanup(listener.stop)
        yield listener.start()
        return listener

    def notify(self, channel: str, payload: str) -> None:
        self.db.query("SELECT pg_notify(%s, %s)", (channel, payload))

    def terminate_listener(self) -> None:
        cluster().psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{self.db.name}' AND application_name = 'qvd-test-listener'"
        )

    def test_channel_names_are_validated(self) -> None:
        listener = Listener(config_for(self.db))
        for bad in ("Upper", "1abc", 'x"; DROP TABLE configs; --', ""):
            self.assertRaises(ValueError, listener.listen, bad, lambda channel, payload: None)

    @defer.inlineCallbacks
    def test_notifications_reach_callbacks_until_unlisten(self) -> Generator[Any, Any, None]:
        listener = yield self.started()
        first: defer.DeferredQueue[tuple[str, str]] = defer.DeferredQueue()
        second: defer.DeferredQueue[tuple[str, str]] = defer.DeferredQueue()

        def on_first(channel: str, payload: str) -> None:
            first.put((channel, payload))

        yield listener.listen("qvd_test_first", on_first)
        yield listener.listen("qvd_test_second", lambda channel, payload: second.put((channel, payload)))
        self.notify("qvd_test_first", "hello")
        self.assertEqual((yield first.get()), ("qvd_test_first", "hello"))
        yield listener.unlisten("qvd_test_first", on_first)
        self.notify("qvd_test_first", "not heard")
        self.notify("qvd_test_second", "heard")  # NOTIFYs arrive in commit order
        self.assertEqual((yield second.get()), ("qvd_test_second", "heard"))
        self.assertEqual(first.pending, [])

    @defer.inlineCallbacks
    def test_reconnects_with_capped_backoff_and_listens_again(self) -> Generator[Any, Any, None]:
        clock = RecordingClock()
        listener = yield self.started(clock=clock)
        heard: defer.DeferredQueue[str] = defer.DeferredQueue()
        yield listener.listen("qvd_test", lambda channel, payload: heard.put(payload))
        reconnected: defer.DeferredQueue[None] = defer.DeferredQueue()
        listener.on_reconnect(lambda: reconnected.put(None))

        self.addCleanup(cluster().psql, f'ALTER DATABASE "{self.db.name}" CONNECTION LIMIT -1')
        cluster().psql(f'ALTER DATABASE "{self.db.name}" CONNECTION LIMIT 0')
        self.terminate_listener()
        delays = []
        for _ in BACKOFFS:  # every attempt is refused: the delay doubles up to its cap
            delays.append((yield clock.next_delay()))
            if len(delays) < len(BACKOFFS):
                clock.advance(delays[-1])
        self.assertEqual([round(d, 3) for d in delays], BACKOFFS)
        self.assertFalse(listener.connected)

        cluster().psql(f'ALTER DATABASE "{self.db.name}" CONNECTION LIMIT -1')
        clock.advance(delays[-1])
        yield reconnected.get()
        self.assertTrue(listener.connected)
        self.notify("qvd_test", "after reconnect")
        self.assertEqual((yield heard.get()), "after reconnect")

        self.terminate_listener()  # a later loss starts from the shortest delay again
        self.assertEqual((yield clock.next_delay()), BACKOFFS[0])


class ConfigWatcherTests(unittest.TestCase):
    def setUp(self) -> None:
        self.db = new_database()
        self.addCleanup(drop_database, self.db)

    @defer.inlineCallbacks
    def watching(
        self, extra: str = "", clock: Any = None
    ) -> Generator[Any, Any, tuple[ConfigWatcher, Config]]:
        """A started watcher over a started pool and listener; waits for the first load."""
        config = config_for(self.db, "internal.hkd.agent.config.delay = 0.5\n" + extra)
        database = Database(config, "qvd-test-pool")
        self.addCleanup(database.close)
        yield database.start()
        listener = Listener(config, "qvd-test-listener")
        self.addCleanup(listener.stop)
        yield listener.start()
        watcher = ConfigWatcher(config, database, listener, clock=clock)
        loaded = watcher.reloaded()
        watcher.startService()
        self.addCleanup(watcher.stopService)
        if clock is None:
            yield loaded
        return watcher, config

    @defer.inlineCallbacks
    def test_changes_are_applied_live(self) -> Generator[Any, Any, None]:
        self.db.query("INSERT INTO configs VALUES (-1, 'l7r.port', '9443')")
        self.db.query("INSERT INTO configs VALUES (-1, 'database.name', 'not_this_one')")
        self.db.query("INSERT INTO configs VALUES (1, 'l7r.auth.plugins', 'ldap')")
        self.db.query("INSERT INTO ssl_configs VALUES ('l7r.ssl.cert', 'PEM')")
        watcher, config = yield self.watching()
        self.assertEqual(config.get("l7r.port"), "9443")
        self.assertEqual(config.get("database.name"), self.db.name)  # file-only key
        self.assertEqual(config.get("l7r.auth.plugins", tenant=1), "ldap")
        self.assertEqual(config.get("l7r.ssl.cert"), "PEM")

        for statement, expected in [
            ("UPDATE configs SET value = '9444' WHERE tenant_id = -1 AND key = 'l7r.port'", "9444"),
            ("DELETE FROM configs WHERE tenant_id = -1 AND key = 'l7r.port'", "8443"),
            ("INSERT INTO configs VALUES (-1, 'l7r.port', '9445')", "9445"),
        ]:
            reloaded = watcher.reloaded()
            self.db.query(statement)
            yield reloaded
            self.assertEqual(config.get("l7r.port"), expected, statement)
        self.assertEqual(config.get("database.name"), self.db.name)

    @defer.inlineCallbacks
    def test_failed_reload_is_retried_after_the_configured_delay(self) -> Generator[Any, Any, None]:
        self.db.query("INSERT INTO configs VALUES (-1, 'l7r.port', '9443')")
        self.db.query("ALTER TABLE configs RENAME TO configs_hidden")
        clock = RecordingClock()
        watcher, config = yield self.watching("internal.hkd.agent.config.delay = 3\n", clock)
        reloaded = watcher.reloaded()
        self.assertEqual((yield clock.next_delay()), 3)
        self.assertEqual(config.get("l7r.port"), "8443")
        self.db.query("ALTER TABLE configs_hidden RENAME TO configs")
        clock.advance(3)
        yield reloaded
        self.assertEqual(config.get("l7r.port"), "9443")

    @defer.inlineCallbacks
    def test_changes_survive_a_server_restart(self) -> Generator[Any, Any, None]:
        """A change made while the LISTEN connection is dead is read on reconnect."""
        watcher, config = yield self.watching()
        self.addCleanup(cluster().start)
        reloaded = watcher.reloaded()
        cluster().restart()
        self.db.query("INSERT INTO configs VALUES (-1, 'l7r.port', '9446')")  # nobody hears it
        yield reloaded
        self.assertEqual(config.get("l7r.port"), "9446")

        reloaded = watcher.reloaded()
        self.db.query("UPDATE configs SET value = '9447' WHERE key = 'l7r.port'")
        yield reloaded
        self.assertEqual(config.get("l7r.port"), "9447")

    def qa(self, *words: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """The real ``qa`` command, in a child process (the reactor keeps running)."""
        directory = self.mktemp()
        os.makedirs(directory)
        conf = self.db.write_conf(directory)
        return utils.getProcessOutputAndValue(
            sys.executable, ["-m", "qvd.admin.cli", "-c", conf, *words], env=os.environ)

    @defer.inlineCallbacks
    def test_qa_config_set_reaches_a_running_watcher(self) -> Generator[Any, Any, None]:
        """The administrator's command is seen live, and again after PostgreSQL restarts."""
        watcher, config = yield self.watching()
        reloaded = watcher.reloaded()
        out, err, code = yield self.qa("config", "set", "key=l7r.port,value=9500")
        self.assertEqual((code, err), (0, b""))
        yield reloaded
        self.assertEqual(config.get_int("l7r.port"), 9500)

        self.addCleanup(cluster().start)
        reconnected = watcher.reloaded()
        cluster().restart()
        yield reconnected
        reloaded = watcher.reloaded()
        out, err, code = yield self.qa("config", "set", "key=l7r.port,value=9501")
        self.assertEqual((code, err), (0, b""))
        yield reloaded
        self.assertEqual(config.get_int("l7r.port"), 9501)
