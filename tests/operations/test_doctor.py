"""``qvd-doctor`` on the node ``./run-node`` sets up (``qvd-embedded setup``), healthy and
then broken in the ways support engineers meet: each problem named, with its fix."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.trial import unittest

from qvd.certificates import write_self_signed
from qvd.config import Config
from qvd.db import connect_sync
from qvd.doctor import checks
from qvd.pgcluster import LocalCluster

from qvd.stream.sockets import free_port

DOCTOR = "from qvd.doctor.cli import main; import sys; sys.exit(main())"


class DoctorTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        # not under pytest's base temp: see tests/test_embedded.py
        scratch = tempfile.mkdtemp(prefix="qvd-doctor-test-")
        self.addCleanup(shutil.rmtree, scratch, True)
        self.data = os.path.join(scratch, "data")
        self.port = free_port()
        self.addCleanup(
            lambda: LocalCluster(os.path.join(self.data, "postgresql"), self.port).destroy())
        done = subprocess.run([sys.executable, "-m", "qvd.embedded", "setup", "--data", self.data,
                               "--port", str(self.port), "--system-conf",
                               os.path.join(scratch, "etc", "node.conf")],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.conf = os.path.join(self.data, "node.conf")
        self.l7r_port = free_port()
        with open(self.conf, "a") as f:  # the tests' machine may hold 8443
            f.write(f"l7r.port = {self.l7r_port}\n")
        self.config = Config.load(self.conf)

    def doctor(self, conf: str = "") -> tuple[int, dict[str, dict]]:
        """Exit status and findings (by check) of ``qvd-doctor --format json``."""
        done = subprocess.run([sys.executable, "-c", DOCTOR, "-c", conf or self.conf,
                               "--format", "json"], capture_output=True, text=True)
        self.assertEqual(done.stderr, "")
        report = json.loads(done.stdout)
        self.assertEqual(report["ok"], done.returncode == 0)
        return done.returncode, {f["check"]: f for f in report["checks"]}

    def problem(self, findings: dict[str, dict], check: str) -> dict:
        self.assertEqual(findings[check]["status"], "problem", findings)
        return findings[check]

    def sql(self, statement: str) -> None:
        conn = connect_sync(self.config)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def test_a_healthy_node_then_broken_ones(self) -> None:
        code, findings = self.doctor()
        self.assertEqual(code, 0, json.dumps(findings, indent=1))
        self.assertEqual(set(findings), {"configuration", "database", "schema", "host", "clock",
                                         "certificate key", "certificate", f"port {self.l7r_port}",
                                         "nxagent", "hypervisor"})
        text = subprocess.run([sys.executable, "-c", DOCTOR, "-c", self.conf],
                              capture_output=True, text=True).stdout
        self.assertTrue(text.endswith("qvd-doctor: all checks pass\n"), text)

        key = self.config.get("path.l7r.ssl.key")
        os.chmod(key, 0o644)
        code, findings = self.doctor()
        found = self.problem(findings, "certificate key")
        self.assertEqual((code, found["fix"]), (1, f"chown root:root {key} && chmod 600 {key}"))
        self.assertIn("mode 0644", found["message"])
        os.chmod(key, 0o600)

        with socket.socket() as squatter:
            squatter.bind(("0.0.0.0", self.l7r_port))
            squatter.listen()
            found = self.problem(self.doctor()[1], f"port {self.l7r_port}")
            self.assertIn(f"pid {os.getpid()}", found["message"])
            self.assertIn("set l7r.port to a free port", found["fix"])

        nodename = self.config.get("nodename")
        self.sql("UPDATE host_runtimes SET blocked = TRUE")
        self.assertEqual(self.problem(self.doctor()[1], "host")["fix"],
                         f"qa host name={nodename} unblock")
        self.sql("DELETE FROM vm_runtimes; DELETE FROM vms; DELETE FROM host_counters;"
                 " DELETE FROM host_runtimes; DELETE FROM hosts")
        found = self.problem(self.doctor()[1], "host")
        self.assertIn(f"no host named {nodename!r}", found["message"])
        self.assertEqual(found["fix"], f"qa host new name={nodename},address=<this node's IP>")

        self.assertEqual(subprocess.run([sys.executable, "-m", "qvd.embedded", "stop", "--data",
                                         self.data], capture_output=True).returncode, 0)
        code, findings = self.doctor()
        found = self.problem(findings, "database")
        self.assertIn("cannot connect to database", found["message"])
        self.assertIn("start PostgreSQL", found["fix"])
        self.assertEqual({findings[c]["status"] for c in ("schema", "host", "clock")},
                         {"skipped"})
        self.assertEqual(findings["nxagent"]["status"], "ok", "the other checks still run")

        broken = os.path.join(self.data, "broken.conf")
        with open(broken, "w") as f:
            f.write("nodename = x\nvm.hypervisor = process\nvm.process.account = root\n")
        code, findings = self.doctor(broken)
        self.assertIn("database.password not set", self.problem(findings, "configuration")
                      ["message"])
        self.assertEqual(findings["hypervisor"]["status"], "skipped")


class CheckUnitTests(unittest.TestCase):
    """Checks whose broken state a test machine cannot reach for real."""

    def setUp(self) -> None:
        self.config = Config({"vm.hypervisor": "process", "vm.process.account": "root"})

    def test_sessions_run_as_an_existing_account_that_is_not_root(self) -> None:
        [found] = checks.hypervisor(self.config)
        self.assertEqual(found.status, "problem")
        self.assertIn("never run as root", found.message)
        missing = Config({"vm.hypervisor": "process", "vm.process.account": "qvd-no-such-one"})
        self.assertIn("useradd", checks.hypervisor(missing)[0].fix)

    def test_a_certificate_about_to_expire(self) -> None:
        scratch = tempfile.mkdtemp(prefix="qvd-doctor-cert-")
        self.addCleanup(shutil.rmtree, scratch, True)
        key, cert = os.path.join(scratch, "key.pem"), os.path.join(scratch, "cert.pem")
        write_self_signed(key, cert, ["localhost"], days=40)
        config = Config({"path.l7r.ssl.key": key, "path.l7r.ssl.cert": cert})
        today = datetime.datetime.now(datetime.timezone.utc)
        self.assertEqual([f.status for f in checks.certificate(config, today)], ["ok", "ok"])
        soon = checks.certificate(config, today + datetime.timedelta(days=20))[1]
        self.assertEqual((soon.status, soon.fix), ("problem", "renew the L7R's certificate"))
        self.assertIn("in 19 days", soon.message)
        gone = checks.certificate(config, today + datetime.timedelta(days=41))[1]
        self.assertIn("expired on", gone.message)

    def test_libvirt_prerequisites(self) -> None:
        config = Config({"vm.hypervisor": "lxc", "vm.network.bridge": "qvd-no-bridge"})
        found = {f.check: f for f in checks.hypervisor(config)}
        self.assertEqual(found["bridge"].status, "problem")
        self.assertIn("ip link add qvd-no-bridge type bridge", found["bridge"].fix)
        self.assertIn("libvirt", found)
        self.assertIn(found["overlayfs"].status, ("ok", "problem"))
