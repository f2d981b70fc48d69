"""``qa vm start|stop|disconnect``: host assignment, commands and NOTIFYs on QVD-DB."""

from __future__ import annotations

import select

from tests.support.hkd import HKDTestCase


class QaCommandTests(HKDTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.qa("host new name=n1,address=10.0.0.1")
        self.qa("host new name=n2,address=10.0.0.2")
        self.n1, self.n2 = (row[0] for row in self.db.query("SELECT id FROM hosts ORDER BY id"))
        self.vm_id = self.new_vm("v1")
        self.qa("config set key=l7r.loadbalancer.plugin.default.weight.random,value=0")
        self.listening = self.db.connect()
        self.listening.autocommit = True
        self.addCleanup(self.listening.close)

    def alive(self, host_id: int, ram: float, cpu: float, state: str = "running") -> None:
        self.db.query("UPDATE host_runtimes SET state = %s, ok_ts = now(), usable_ram = %s,"
                      " usable_cpu = %s WHERE host_id = %s", (state, ram, cpu, host_id))

    def listen(self, channel: str) -> None:
        with self.listening.cursor() as cur:
            cur.execute(f"LISTEN {channel}")

    def notified(self) -> list[str]:
        select.select([self.listening], [], [], 5)
        self.listening.poll()
        channels = [n.channel for n in self.listening.notifies]
        self.listening.notifies.clear()
        return channels

    def test_start_assigns_the_best_host_and_notifies_it(self):
        self.alive(self.n1, 1000, 1000)
        self.alive(self.n2, 8000, 8000)
        self.listen(f"qvd_cmd_for_vm_on_host{self.n2}")
        self.qa(f"vm id={self.vm_id} start")
        self.assertEqual(self.db.query("SELECT host_id, vm_cmd FROM vm_runtimes WHERE vm_id = %s",
                                       (self.vm_id,)), [(self.n2, "start")])
        self.assertEqual(self.notified(), [f"qvd_cmd_for_vm_on_host{self.n2}"])

    def test_start_never_uses_a_blocked_or_silent_host(self):
        self.alive(self.n1, 1000, 1000)
        self.alive(self.n2, 8000, 8000)
        self.qa("host name=n2 block")
        self.qa(f"vm id={self.vm_id} start")
        self.assertEqual(self.vm_host(), self.n1)
        self.db.query("UPDATE vm_runtimes SET host_id = NULL, vm_cmd = NULL")
        self.db.query("UPDATE host_runtimes SET ok_ts = now() - interval '1 hour'"
                      " WHERE host_id = %s", (self.n1,))
        self.assertIn(f"vm {self.vm_id} cannot start: no host available",
                      self.qa_fails(f"vm id={self.vm_id} start"))

    def test_start_keeps_an_assigned_host(self):
        self.alive(self.n1, 1000, 1000)
        self.db.query("UPDATE vm_runtimes SET host_id = %s", (self.n2,))
        self.qa(f"vm id={self.vm_id} start")
        self.assertEqual(self.vm_host(), self.n2)

    def test_stop_sets_the_command_and_notifies(self):
        self.assertIn("only a starting, running or debugging vm can be stopped",
                      self.qa_fails(f"vm id={self.vm_id} stop"))
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running', host_id = %s", (self.n1,))
        self.listen(f"qvd_cmd_for_vm_on_host{self.n1}")
        self.qa(f"vm id={self.vm_id} stop")
        self.assertEqual(self.db.query("SELECT vm_cmd FROM vm_runtimes"), [("stop",)])
        self.assertEqual(self.notified(), [f"qvd_cmd_for_vm_on_host{self.n1}"])

    def test_disconnect_asks_the_sessions_l7r(self):
        self.assertIn("has no user connected",
                      self.qa_fails(f"vm id={self.vm_id} disconnect_user"))
        self.db.query("UPDATE vm_runtimes SET user_state = 'connected', l7r_host_id = %s",
                      (self.n2,))
        self.listen(f"qvd_cmd_for_user_on_host{self.n2}")
        self.qa(f"vm id={self.vm_id} disconnect_user")
        self.assertEqual(self.db.query("SELECT user_cmd FROM vm_runtimes"), [("abort",)])
        self.assertEqual(self.notified(), [f"qvd_cmd_for_user_on_host{self.n2}"])
        self.qa(f"vm id={self.vm_id} disconnect")

    def test_the_manuals_lines(self):
        """Starting and stopping many VMs by filter acts on those in the right state."""
        self.alive(self.n1, 1000, 1000)
        self.qa("user new login=guest1,password=x")
        self.qa("vm new name=TestVM,user=guest1,osf=desk")
        test_vm = self.db.query("SELECT id FROM vms WHERE name = 'TestVM'")[0][0]
        self.qa("vm name=TestVM start")
        self.assertEqual(self.db.query("SELECT vm_cmd FROM vm_runtimes WHERE vm_id = %s",
                                       (test_vm,)), [("start",)])
        self.qa(f"vm id={self.vm_id} start")
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running', vm_cmd = NULL")
        self.qa('vm "user~guest%" stop')
        self.assertEqual(self.db.query("SELECT vm_id FROM vm_runtimes WHERE vm_cmd = 'stop'"),
                         [(test_vm,)])
        self.db.query("UPDATE vm_runtimes SET vm_state = 'stopped', vm_cmd = NULL"
                      " WHERE vm_id = %s", (test_vm,))
        self.qa("vm osf=desk stop")  # only the running one
        self.assertEqual(self.db.query("SELECT vm_id FROM vm_runtimes WHERE vm_cmd = 'stop'"),
                         [(self.vm_id,)])

    def vm_host(self) -> int:
        return self.db.query("SELECT host_id FROM vm_runtimes WHERE vm_id = %s",
                             (self.vm_id,))[0][0]
