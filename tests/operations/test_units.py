"""``qvd-units install``: systemd units every one of which ``systemd-analyze verify`` accepts
without a warning, and a logrotate file ``logrotate`` accepts, for this installation."""

from __future__ import annotations

import configparser
import io
import os
import subprocess
import sys

from twisted.trial import unittest

from qvd.units import UNITS, main
from tests.support.paths import scratch_dir


class UnitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = scratch_dir(self)
        self.conf = os.path.join(self.directory, "node.conf")
        with open(self.conf, "w") as f:
            f.write(f"nodename = n1\npath.run = {self.directory}/run\n"
                    f"path.log = {self.directory}/log\n"
                    f"log.filename = {self.directory}/daemons/qvd.log\n")
        self.units = os.path.join(self.directory, "units")
        self.logrotate = os.path.join(self.directory, "logrotate.d")
        self.assertEqual(main(["install", "-c", self.conf, "--unit-dir", self.units,
                               "--logrotate-dir", self.logrotate, "--no-reload"]), 0)

    def unit(self, name: str) -> configparser.ConfigParser:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read(os.path.join(self.units, name))
        return parser

    def test_every_unit_passes_systemd_analyze_verify(self) -> None:
        self.assertEqual(sorted(os.listdir(self.units)), sorted(UNITS))
        for name in UNITS:
            done = subprocess.run(["systemd-analyze", "verify", os.path.join(self.units, name)],
                                  capture_output=True, text=True)
            self.assertEqual((done.returncode, done.stderr), (0, ""), name)

    def test_what_each_daemon_needs(self) -> None:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        for name in UNITS:
            service = self.unit(name)["Service"]
            plugin = name.removesuffix(".service")
            self.assertTrue(service["ExecStart"].startswith(f"{twistd} --nodaemon --pidfile= "))
            self.assertIn(f" {plugin}", service["ExecStart"])
            self.assertEqual(service["Restart"], "on-failure", name)
        for name in ("qvd-l7r.service", "qvd-node.service"):
            self.assertEqual(self.unit(name)["Service"]["ExecReload"], "/bin/kill -HUP $MAINPID")
        for name in ("qvd-hkd.service", "qvd-node.service"):  # process VMs outlive a crash
            self.assertEqual(self.unit(name)["Service"]["KillMode"], "process")
        l7r = self.unit("qvd-l7r.service")["Service"]
        self.assertEqual(l7r["ProtectSystem"], "strict")
        self.assertEqual(l7r["ReadWritePaths"].split(), sorted(
            [f"-{self.directory}/daemons", f"-{self.directory}/log", f"-{self.directory}/run"]))
        self.assertIn(f"--config {self.conf}", l7r["ExecStart"])
        self.assertNotIn("NoNewPrivileges", self.unit("qvd-hkd.service")["Service"],
                         "desktop sessions of process VMs may need setuid helpers")

    def test_logrotate_rotates_the_log_files(self) -> None:
        path = os.path.join(self.logrotate, "qvd")
        with open(path) as f:
            text = f.read()
        self.assertIn(f"{self.directory}/daemons/*.log {self.directory}/log/*.log {{", text)
        self.assertIn("copytruncate", text)
        os.makedirs(f"{self.directory}/daemons")
        with open(f"{self.directory}/daemons/qvd.log", "w") as f:
            f.write("a line\n")
        done = subprocess.run(["logrotate", "--debug", "--state",
                               os.path.join(self.directory, "state"), path],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"considering log {self.directory}/daemons/qvd.log", done.stderr)
        self.assertNotIn("error", done.stderr.lower())

    def test_a_bad_config_is_one_line(self) -> None:
        err = io.StringIO()
        sys.stderr, saved = err, sys.stderr
        try:
            code = main(["install", "-c", os.path.join(self.directory, "missing.conf"),
                         "--unit-dir", self.units, "--no-reload"])
        finally:
            sys.stderr = saved
        self.assertEqual(code, 1)
        self.assertIn("qvd-units: cannot read configuration file", err.getvalue())
