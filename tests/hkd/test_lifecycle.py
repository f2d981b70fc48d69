"""A VM's life through ``qa`` and a real HKD with real VMAs."""

from __future__ import annotations

import os
import signal

from twisted.internet.defer import inlineCallbacks

from tests.support.hkd import HKDTestCase, pid_gone
from tests.support.postgres import cluster

PORT_COLUMNS = ("host_id", "vm_address", "vm_vma_port", "vm_x_port", "vm_pid", "vm_cmd")


class VMLifecycleTests(HKDTestCase):
    @inlineCallbacks
    def test_start_and_stop(self):
        host_id, conf = self.host()
        yield self.start_hkd(conf, host_id)
        [(vm_id, row)] = yield self.running_vms("v1")
        self.assertEqual(row["host_id"], host_id)
        self.assertEqual(row["vm_address"], "127.0.0.1")
        self.assertGreater(row["vm_vma_port"], 0)
        self.assertGreater(row["vm_x_port"], 4000)
        self.assertEqual((yield self.ping(row)), 1)
        self.assertEqual(self.db.query("SELECT run_attempts, run_ok FROM vm_counters"
                                       " WHERE vm_id = %s", (vm_id,)), [(1, 1)])
        self.assertIn("only a stopped vm can be started", self.qa_fails(f"vm id={vm_id} start"))

        self.qa(f"vm id={vm_id} stop")
        stopped = yield self.wait_vm(vm_id, "stopped")
        self.assertEqual({k: stopped[k] for k in PORT_COLUMNS}, dict.fromkeys(PORT_COLUMNS))
        self.assertTrue(pid_gone(row["vm_pid"]))
        self.assertIn("only a starting, running or debugging vm can be stopped",
                      self.qa_fails(f"vm id={vm_id} stop"))

    @inlineCallbacks
    def signal_the_vma(self, number: int):
        """A running VM whose VMA gets signal ``number``: its rows, running and then
        once the HKD has stopped it."""
        host_id, conf = self.host()
        yield self.start_hkd(conf, host_id)
        [(vm_id, running)] = yield self.running_vms("v1")
        os.kill(running["vm_pid"], number)
        stopped = yield self.wait_vm(vm_id, "stopped")
        return running, stopped

    @inlineCallbacks
    def test_a_killed_vma_is_detected_and_the_vm_stopped(self):
        _, stopped = yield self.signal_the_vma(signal.SIGKILL)
        self.assertIsNone(stopped["host_id"])

    @inlineCallbacks
    def test_a_vma_that_stops_answering_is_killed(self):
        """SIGSTOP: the process lives on but the VMA is silent, so the monitor kills it."""
        running, _ = yield self.signal_the_vma(signal.SIGSTOP)
        self.assertTrue(pid_gone(running["vm_pid"]))

    @inlineCallbacks
    def test_a_vm_without_a_di_for_its_tag_goes_back_to_stopped(self):
        host_id, conf = self.host()
        yield self.start_hkd(conf, host_id)
        self.qa("vm new name=v1,user=alice,osf=desk,di_tag=nosuchtag")
        vm_id = self.db.query("SELECT id FROM vms WHERE name = 'v1'")[0][0]
        self.qa(f"vm id={vm_id} start")
        yield self.poll(lambda: self.vm_row(vm_id), lambda r: r["host_id"] is None, 30, "release")
        self.assertEqual(self.vm_row(vm_id)["vm_state"], "stopped")


class RestartTests(HKDTestCase):
    @inlineCallbacks
    def test_sigkilled_hkd_readopts_its_vms(self):
        host_id, conf = self.host()
        hkd = yield self.start_hkd(conf, host_id)
        rows = dict((yield self.running_vms("v0", "v1", "v2")))
        vms = list(rows)
        yield hkd.kill("KILL")
        lost = vms[2]
        os.kill(rows[lost]["vm_pid"], signal.SIGKILL)
        yield self.poll(lambda: pid_gone(rows[lost]["vm_pid"]), bool, 10, "VMA death")

        yield self.start_hkd(conf, host_id)
        yield self.wait_vm(lost, "stopped")
        for vm_id in vms[:2]:
            row = self.vm_row(vm_id)
            self.assertEqual((row["vm_state"], row["vm_pid"], row["vm_vma_port"]),
                             ("running", rows[vm_id]["vm_pid"], rows[vm_id]["vm_vma_port"]))
            self.assertEqual((yield self.ping(row)), 1)
        self.assertEqual(sorted(self.vma_pids()), sorted(rows[v]["vm_pid"] for v in vms[:2]))

        self.qa(f"vm id={vms[0]} stop")
        yield self.wait_vm(vms[0], "stopped")
        self.assertTrue(pid_gone(rows[vms[0]]["vm_pid"]))
        self.assertEqual(self.vm_row(vms[1])["vm_state"], "running")

    @inlineCallbacks
    def test_a_vm_given_away_while_the_hkd_was_down_is_killed(self):
        """What the cluster monitor does to a lost host's VMs: the restarted HKD must
        not keep running them (another host may start them)."""
        host_id, conf = self.host()
        hkd = yield self.start_hkd(conf, host_id)
        [(vm_id, row)] = yield self.running_vms("v1")
        pid = row["vm_pid"]
        yield hkd.kill("KILL")
        self.db.query("UPDATE vm_runtimes SET vm_state = 'stopped', host_id = NULL")
        yield self.start_hkd(conf, host_id)
        yield self.poll(lambda: pid_gone(pid), bool, 10, "stray VMA")
        self.assertEqual(self.vma_pids(), [])

    @inlineCallbacks
    def test_sigterm_stops_every_vm_then_the_host(self):
        host_id, conf = self.host()
        hkd = yield self.start_hkd(conf, host_id)
        running = yield self.running_vms("v0", "v1")
        yield hkd.kill("TERM")
        self.assertEqual(self.host_state(host_id), "stopped")
        for vm_id, row in running:
            self.assertEqual(self.vm_row(vm_id)["vm_state"], "stopped")
            self.assertTrue(pid_gone(row["vm_pid"]))

    def cut_database(self) -> None:
        """No session of this test's QVD-DB survives, and no new one is let in."""
        name = self.db.name
        self.addCleanup(self.restore_database)
        cluster().psql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        cluster().psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       f" WHERE datname = '{name}'")

    def restore_database(self) -> None:
        cluster().psql(f'ALTER DATABASE "{self.db.name}" ALLOW_CONNECTIONS true')

    @inlineCallbacks
    def test_losing_the_database_ends_the_hkd_with_a_failure_status(self):
        """A supervisor (systemd's Restart=on-failure) must see that the HKD gave up."""
        host_id, conf = self.host(extra="internal.hkd.agent.ticker.timeout = 2\n")
        hkd = yield self.start_hkd(conf, host_id)
        ended = hkd.ended()
        self.cut_database()
        self.assertEqual((yield ended), 1, hkd.output())
        self.assertIn("HKD cannot go on: no successful heartbeat", hkd.output())

    @inlineCallbacks
    def test_sigterm_without_the_database_stops_the_vms_at_once(self):
        """No waiting for QVD-DB to write rows down: the next start does it."""
        host_id, conf = self.host(extra="internal.hkd.stopping.vms.timeout = 300\n")
        hkd = yield self.start_hkd(conf, host_id)
        [(vm_id, row)] = yield self.running_vms("v1")
        pid = row["vm_pid"]
        ended = hkd.ended()
        self.cut_database()
        hkd.process.signalProcess("TERM")
        yield self.poll(lambda: ended.called, bool, 30, "HKD exit after SIGTERM")
        self.assertTrue(pid_gone(pid))
        self.assertIn(f"VM {vm_id}: row left for the next HKD start", hkd.output())

        self.restore_database()
        self.assertEqual(self.vm_row(vm_id)["vm_state"], "running")  # all QVD-DB knows
        yield self.start_hkd(conf, host_id)
        row = yield self.wait_vm(vm_id, "stopped")
        self.assertEqual((row["host_id"], row["vm_pid"]), (None, None))

    @inlineCallbacks
    def test_host_stop_command(self):
        host_id, conf = self.host()
        hkd = yield self.start_hkd(conf, host_id)
        [(vm_id, row)] = yield self.running_vms("v1")
        pid = row["vm_pid"]
        ended = hkd.ended()
        self.db.query("UPDATE host_runtimes SET cmd = 'stop' WHERE host_id = %s", (host_id,))
        self.db.query(f"NOTIFY qvd_cmd_for_host{host_id}")
        yield ended
        self.assertEqual(self.host_state(host_id), "stopped")
        self.assertEqual(self.vm_row(vm_id)["vm_state"], "stopped")
        self.assertTrue(pid_gone(pid))
        self.assertIsNone(self.db.query("SELECT cmd FROM host_runtimes WHERE host_id = %s",
                                        (host_id,))[0][0])
