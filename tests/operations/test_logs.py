"""``log.level``, ``log.filename`` and ``log.format`` (node.conf and vma.conf), as the daemons
honour them under twistd."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, Generator

from twisted.internet import defer, reactor
from twisted.logger import FilteringLogObserver, LogLevel, Logger, LogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from qvd import logs
from qvd.config import Config, ConfigError
from qvd.http.simplerpc import SimpleRPCClient
from qvd.stream.sockets import free_port
from tests.support.paths import ROOT, scratch_dir
from tests.support.processes import Child
from tests.support.vma import free_display
from tests.support.waiting import poll

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def emitted(observer: Any, *calls: tuple[LogLevel, str, dict[str, Any]]) -> None:
    """Log through ``observer`` as the daemons' code does (a Logger on a publisher)."""
    publisher = LogPublisher(observer)
    log = Logger(namespace="qvd.test", observer=publisher)
    for level, text, fields in calls:
        log.emit(level, text, **fields)


class FormatAndLevelTests(unittest.TestCase):
    def test_json_lines_carry_the_events_fields(self) -> None:
        lines: list[str] = []
        emitted(lambda event: lines.append(logs.json_line(event)),
                (LogLevel.info, "session end: {login} on VM {vm_id}",
                 {"login": "alice", "vm_id": 10000, "seconds": 1.5, "obj": object()}))
        record = json.loads(lines[0])
        self.assertEqual((record["level"], record["namespace"], record["message"]),
                         ("info", "qvd.test", "session end: alice on VM 10000"))
        self.assertEqual((record["login"], record["vm_id"], record["seconds"]),
                         ("alice", 10000, 1.5))
        self.assertTrue(record["obj"].startswith("<object object"), "anything else as text")
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")

    def test_a_failure_becomes_its_traceback(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        line = logs.json_line({"log_level": LogLevel.critical, "log_namespace": "x",
                               "log_format": "boom", "log_failure": failure, "log_time": 0})
        self.assertIn("ZeroDivisionError", json.loads(line)["traceback"])

    def test_level_filters_below_it(self) -> None:
        seen: list[str] = []
        for level, expected in (("DEBUG", ["d", "i", "e"]), ("INFO", ["i", "e"]),
                                ("ERROR", ["e"]), ("OFF", [])):
            seen.clear()
            observer = logs.filtered(lambda e: seen.append(e["log_format"]),
                                     logs.level(Config({"log.level": level})))
            emitted(observer, (LogLevel.debug, "d", {}), (LogLevel.info, "i", {}),
                    (LogLevel.error, "e", {}))
            self.assertEqual(seen, expected, level)

    def test_bad_values_are_refused(self) -> None:
        with self.assertRaises(ConfigError):
            logs.level(Config({"log.level": "LOUD"}))
        with self.assertRaises(ConfigError):
            logs.log_format(Config({"log.format": "xml"}))


class DestinationTests(unittest.TestCase):
    """Which file twistd's options and log.filename pick (qvd.logs, rules 1-5)."""

    def setUp(self) -> None:
        self.directory = scratch_dir(self)
        self.file = os.path.join(self.directory, "sub", "qvd.log")

    def written(self, config: Config, twistd: dict[str, Any]) -> str:
        observer = logs.observer(config, twistd)
        emitted(observer, (LogLevel.info, "hello {who}", {"who": "there"}))
        if not os.path.exists(self.file):
            return ""
        with open(self.file) as f:
            return f.read()

    def test_log_filename_set_in_the_file_is_used_even_in_the_foreground(self) -> None:
        config = Config({"log.filename": self.file, "log.format": "json"})
        text = self.written(config, {"nodaemon": True})
        self.assertEqual(json.loads(text)["message"], "hello there")

    def test_the_default_log_filename_is_for_daemons_in_the_background(self) -> None:
        config = Config({"path.log": os.path.dirname(self.file)})
        self.assertEqual(self.written(config, {"nodaemon": True}), "", "foreground: stdout")
        self.assertIn("hello there", self.written(config, {"nodaemon": False}))

    def test_twistds_own_options_win(self) -> None:
        config = Config({"log.filename": os.path.join(self.directory, "other.log")})
        os.makedirs(os.path.dirname(self.file))  # twistd --logfile does not create it
        self.assertIn("hello there", self.written(config, {"logfile": self.file}))
        self.assertIsNone(logs.observer(config, {"logger": "some.factory"}))
        syslog = logs.observer(config, {"syslog": True, "prefix": "qvd-test", "nodaemon": True})
        self.assertIsInstance(syslog, FilteringLogObserver, "syslog, behind log.level")
        self.assertFalse(os.path.exists(config.get("log.filename")))
        self.assertIsNone(logs.observer(config, None), "not run by twistd")

    def test_an_unwritable_log_file_is_a_start_up_error(self) -> None:
        blocker = os.path.join(self.directory, "a-file")
        open(blocker, "w").close()
        with self.assertRaises(ConfigError) as raised:
            logs.observer(Config({"log.filename": f"{blocker}/qvd.log"}), {"nodaemon": True})
        self.assertIn("(log.filename)", str(raised.exception))


class VMATwistdTests(unittest.TestCase):
    """A real ``twistd -n qvd-vma`` with its log settings in vma.conf (QVD 4's VMA keys)."""

    timeout = 60

    @defer.inlineCallbacks
    def run_vma(self, settings: str) -> Generator[Any, Any, tuple[str, bytes]]:
        """Start the VMA, wait for its RPC port, stop it; (its log file, its stdout)."""
        directory = scratch_dir(self)
        port, log_file = free_port(), os.path.join(directory, "log", "qvd.log")
        conf = os.path.join(directory, "vma.conf")
        with open(conf, "w") as f:
            f.write(f"path.run = {directory}/run\npath.log = {directory}/log\n"
                    f"internal.vm.port.vma = {port}\ninternal.nxagent.display = {free_display()}\n"
                    f"vma.address = 127.0.0.1\nlog.filename = {log_file}\n{settings}")
        vma = Child(self, [TWISTD, "-n", "--pidfile=", "qvd-vma", "--config", conf],
                    dict(os.environ, PYTHONPATH=ROOT))
        rpc = SimpleRPCClient(reactor, "127.0.0.1", port, timeout=2)
        yield poll(lambda: rpc.call("ping").addErrback(lambda _: None), lambda r: r is not None,
                   what="the VMA answering")
        vma.process.signalProcess(signal.SIGTERM)
        yield vma.protocol.ended
        with open(log_file) as f:
            return f.read(), vma.protocol.output

    @defer.inlineCallbacks
    def test_json_lines_in_log_filename(self) -> Generator[Any, Any, None]:
        text, stdout = yield self.run_vma("log.format = json\n")
        records = [json.loads(line) for line in text.splitlines()]
        listening = [r for r in records if r["message"].startswith("VMA listening on port")]
        self.assertEqual(len(listening), 1, text)
        self.assertEqual((listening[0]["level"], listening[0]["namespace"]),
                         ("info", "qvd.vma.service.VMAService"))
        self.assertIn("display", listening[0])
        self.assertEqual(stdout, b"", "the log went to log.filename, not to standard output")

    @defer.inlineCallbacks
    def test_log_level_error_silences_info(self) -> Generator[Any, Any, None]:
        text, _ = yield self.run_vma("log.level = ERROR\n")
        self.assertEqual(text, "")
        text, _ = yield self.run_vma("log.level = INFO\n")
        self.assertIn("VMA listening on port", text)
