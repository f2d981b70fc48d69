"""``twistd qvd-hkd`` refuses what it cannot run on, with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from tests.support.hkd import HKDTestCase
from tests.support.paths import ROOT, TWISTD


class StartupTests(HKDTestCase):
    @inlineCallbacks
    def assert_refused(self, conf: str, message: str):
        """``twistd qvd-hkd`` on ``conf`` exits with a failure status, saying ``message``."""
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qvd-hkd", "--config", conf]
        result = yield threads.deferToThread(subprocess.run, argv, capture_output=True,
                                             text=True, timeout=60, cwd=self.root,
                                             env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(message, result.stderr + result.stdout)

    @inlineCallbacks
    def test_missing_host_row(self):
        _, conf = self.host()
        self.db.query("DELETE FROM hosts")
        yield self.assert_refused(conf, "no host named 'test-node' (nodename) in QVD-DB")

    @inlineCallbacks
    def test_other_schema_version(self):
        _, conf = self.host()
        self.db.query("UPDATE versions SET version = '4.2.0' WHERE component = 'schema'")
        yield self.assert_refused(conf, "QVD-DB schema version is 4.2.0, this HKD needs 4.3.0")

    @inlineCallbacks
    def test_one_hkd_per_node(self):
        host_id, conf = self.host()
        yield self.start_hkd(conf, host_id)
        yield self.assert_refused(conf, "another qvd-hkd is running on this node")
        self.assertEqual(self.host_state(host_id), "running")

    @inlineCallbacks
    def test_unavailable_hypervisor(self):
        """QVD 4 listed a 'nothing' hypervisor it could not load; this release has three."""
        _, conf = self.host()
        self.qa("config set key=vm.hypervisor,value=nothing")
        yield self.assert_refused(conf, "vm.hypervisor = 'nothing' is not available in this"
                                        " release (available: kvm, lxc, process)")

    @inlineCallbacks
    def test_lxc_without_a_qvd_network(self):
        """QVD 4's default is lxc; it needs vm.network.gateway, which has no default."""
        _, conf = self.host()
        self.qa("config set key=vm.hypervisor,value=lxc")
        yield self.assert_refused(conf, "qvd-hkd cannot start: vm.network.gateway is not set")
