"""The run command's node set-up: a private PostgreSQL, QVD-DB and the demo data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial import unittest

from qvd.config import load_file
from qvd.embedded import MARKER, main
from qvd.passwords import qvd_hash
from qvd.pgcluster import LocalCluster
from qvd.stream.sockets import free_port


class EmbeddedSetupTests(unittest.TestCase):
    def setUp(self):
        # Not under pytest's base temp: pytest re-chmods it, which would mask the ACL
        # that lets the postgres account reach the data directory.
        scratch = tempfile.mkdtemp(prefix="qvd-embedded-test-")
        self.addCleanup(shutil.rmtree, scratch, True)
        self.data = os.path.join(scratch, "data")
        self.system_conf = os.path.join(scratch, "etc", "node.conf")
        self.port = free_port()
        self.addCleanup(
            lambda: LocalCluster(os.path.join(self.data, "postgresql"), self.port).destroy())

    def setup_node(self, data: str = "", port: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "qvd.embedded", "setup", "--data", data or self.data,
             "--port", str(port or self.port), "--system-conf", self.system_conf],
            capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def qa(self, *words: str) -> str:
        done = subprocess.run([sys.executable, "-m", "qvd.admin.cli", *words],
                              capture_output=True, text=True,
                              env={**os.environ, "QVD_CONFIG": self.system_conf})
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout

    def test_setup_creates_a_node_with_demo_data_and_is_repeatable(self):
        first = self.setup_node()
        self.assertIn("created now: host, osf, di, user, vm", first)
        self.assertIn("user demo / password demo", first)
        conf = load_file(os.path.join(self.data, "node.conf"))
        self.assertEqual(conf["database.port"], str(self.port))
        self.assertEqual(os.stat(os.path.join(self.data, "node.conf")).st_mode & 0o077, 0)
        with open(self.system_conf) as f:
            self.assertTrue(f.readline().startswith(MARKER))

        listing = self.qa("vm", "get")
        self.assertRegex(listing, r"\| 10000 \| default \| demo \| 0 +\| demo \|")
        self.assertIn("Total: 1", listing)
        self.assertEqual(self._password_of_demo(), qvd_hash("demo", "qvd1234"))
        hosts = self.qa("host", "get", "name, address")
        self.assertRegex(hosts, rf"\| {conf['nodename']} +\| 127.0.0.1 \|")
        di = self.qa("di", "get", "disk_image")
        image = di.splitlines()[3].strip("| ").strip()
        self.assertTrue(os.path.isfile(os.path.join(self.data, "storage", "images", image)))

        again = self.setup_node()
        self.assertIn("already there", again)
        self.assertIn("Total: 1", self.qa("vm", "get"))

    def _password_of_demo(self) -> str:
        conf = load_file(os.path.join(self.data, "node.conf"))
        return subprocess.run(
            ["psql", "-At", "-h", "127.0.0.1", "-p", conf["database.port"], "-U", "qvd",
             "-d", "qvd", "-c", "SELECT password FROM users WHERE login = 'demo'"],
            capture_output=True, text=True,
            env={**os.environ, "PGPASSWORD": conf["database.password"]},
        ).stdout.strip()

    def test_an_administrators_own_node_conf_is_left_alone(self):
        os.makedirs(os.path.dirname(self.system_conf))
        with open(self.system_conf, "w") as f:
            f.write("nodename = production\n")
        output = self.setup_node()
        self.assertIn(f"qa -c {self.data}/node.conf", output)
        with open(self.system_conf) as f:
            self.assertEqual(f.read(), "nodename = production\n")

    def test_a_second_embedded_node_leaves_the_first_ones_system_conf_alone(self):
        self.setup_node()
        with open(self.system_conf) as f:
            first = f.read()
        second, port = os.path.join(os.path.dirname(self.data), "second"), free_port()
        self.addCleanup(
            lambda: LocalCluster(os.path.join(second, "postgresql"), port).destroy())
        output = self.setup_node(second, port)
        with open(self.system_conf) as f:
            self.assertEqual(f.read(), first)
        self.assertIn(f"qa -c {second}/node.conf", output)
        self.assertIn(f"{self.system_conf} was left alone: it is the embedded node in"
                      f" {self.data}'s", output)
        self.assertIn("Total: 1", self.qa("vm", "get"), "qa still reaches the first node")

    def test_stop(self):
        self.setup_node()
        self.assertEqual(main(["stop", "--data", self.data]), 0)
        self.assertFalse(LocalCluster(os.path.join(self.data, "postgresql"), self.port).running())
