"""``qa`` as the manual writes it: ``usage``, ``version``, ``at``-style expiration dates,
filtered ``start``/``stop``/``disconnect_user`` that act on what they can and report the
rest, and ``host get`` with the host counters.  Each manual line runs as printed (the
manual's ids are given to the objects first)."""

from __future__ import annotations

import datetime
import json

from twisted.trial import unittest

from qvd.admin.when import WhenError, parse_when
from tests.test_qa_manual import QaTestCase

NOW = datetime.datetime(2026, 3, 10, 15, 30, 0)  # a Tuesday afternoon


class AtFormatTests(unittest.TestCase):
    def test_the_formats_of_at(self) -> None:
        day = datetime.timedelta(days=1)
        cases = {
            "now": NOW,
            "now + 2 hours": NOW + datetime.timedelta(hours=2),
            "now+30min": NOW + datetime.timedelta(minutes=30),
            "now + 1 week": NOW + 7 * day,
            "tomorrow": NOW + day,
            "tomorrow 18:00": datetime.datetime(2026, 3, 11, 18, 0),
            "18:00 tomorrow": datetime.datetime(2026, 3, 11, 18, 0),
            "16:00": datetime.datetime(2026, 3, 10, 16, 0),
            "09:00": datetime.datetime(2026, 3, 11, 9, 0),  # past today: tomorrow, as at does
            "noon": datetime.datetime(2026, 3, 11, 12, 0),
            "midnight": datetime.datetime(2026, 3, 11, 0, 0),
            "teatime + 1 day": datetime.datetime(2026, 3, 11, 16, 0),
            "4pm": datetime.datetime(2026, 3, 10, 16, 0),
            "10:30 AM Dec 31": datetime.datetime(2026, 12, 31, 10, 30),
            "18:00 12/31/2026": datetime.datetime(2026, 12, 31, 18, 0),
            "12 pm 31.12.26": datetime.datetime(2026, 12, 31, 12, 0),
            "12312026": datetime.datetime(2026, 12, 31),
            "2026-12-31": datetime.datetime(2026, 12, 31),
            "2026-12-31 18:00": datetime.datetime(2026, 12, 31, 18, 0),
            "2026-12-31T18:00": datetime.datetime(2026, 12, 31, 18, 0),
            "january 2 2027 + 3 days": datetime.datetime(2027, 1, 5),
        }
        self.assertEqual({text: parse_when(text, NOW) for text in cases}, cases)
        self.assertIsNone(parse_when("never", NOW))

    def test_what_is_not_a_date(self) -> None:
        for text in ("next blue moon", "now + 2 fortnights", "now + hours", "25:00",
                     "13 pm", "02/30/2026"):
            with self.assertRaises(WhenError, msg=text):
                parse_when(text, NOW)


class ManualLinesTests(QaTestCase):
    def renumber(self, old: int, new: int, *columns: tuple[str, str]) -> None:
        """Give an object the manual's id (QVD-DB's sequences start at 10000)."""
        conn = self.db.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SET CONSTRAINTS ALL DEFERRED")
                for table, column in columns:
                    cur.execute(f"UPDATE {table} SET {column} = %s WHERE {column} = %s",
                                (new, old))
        finally:
            conn.close()

    def renumber_vm(self, name: str, new_id: int) -> None:
        old = self.one("SELECT id FROM vms WHERE name = %s", name)[0]
        self.renumber(old, new_id, ("vms", "id"), ("vm_runtimes", "vm_id"),
                      ("vm_counters", "vm_id"))

    def vms(self, *names: str, user: str = "guest1", osf: str = "desktops") -> None:
        for name in names:
            self.ok(f"qa vm new name={name},user={user},osf={osf}")

    def db_now(self) -> datetime.datetime:
        return self.db.query("SELECT LOCALTIMESTAMP")[0][0]

    def test_usage_and_version(self) -> None:
        overview = self.ok("qa4 usage")
        self.assertIn("AVAILABLE COMMANDS", overview)
        self.assertIn("vm (Intended to QVD virtual machines management)", overview)
        self.assertIn("version (Retrieves information about the QVD version", overview)
        vm = self.ok("qa4 usage vm")
        self.assertTrue(vm.startswith("VM COMMAND USAGE"))
        for part in ("== CREATING A NEW VM", "vm <FILTERS> set property key=value",
                     "== EXECUTING VMs", "vm myVM get (Equal to vm name=myVM get)",
                     "expiration_hard=tomorrow 18:00"):
            self.assertIn(part, vm)
        self.assertIn("totp new", self.ok("qa usage user"))
        self.fails("qa usage gadget", "no usage for 'gadget'", code=2)
        self.assertEqual(self.ok("qa version"), "4.3.0\n")

    def test_expiration_dates(self) -> None:
        self.staging("ubuntu-13-04.tar.gz")
        self.ok("qa osf new name=desktops")
        self.ok("qa di new disk_image=ubuntu-13-04.tar.gz,osf=desktops")
        self.renumber(self.one("SELECT id FROM dis")[0], 1000, ("dis", "id"),
                      ("di_runtimes", "di_id"))
        self.db.query("UPDATE dis SET path = '1000-ubuntu-13-04.tar.gz'")
        self.ok("qa user new login=guest1,password=x")
        self.vms("a", "b", "c")
        self.renumber_vm("c", 15)

        self.assertEqual(self.ok("qa4 vm di_id=1000 set expiration_soft=now"), "Total: 3\n")
        self.assertEqual(
            self.ok("qa4 vm di_name=1000-ubuntu-13-04.tar.gz set expiration_soft=now"
                    " expiration_hard=tomorrow"), "Total: 3\n")
        soft, hard = self.one("SELECT vm_expiration_soft, vm_expiration_hard FROM vm_runtimes"
                              " WHERE vm_id = 15")
        self.assertEqual((hard - soft).total_seconds(), 86400)
        self.assertEqual(self.ok("qa4 vm id=15 set expiration_soft=now"), "Total: 1\n")

        before = self.db_now()
        self.ok("qa vm id=15 set expiration_soft=now + 2 hours, expiration_hard=tomorrow 18:00")
        soft, hard = self.one("SELECT vm_expiration_soft, vm_expiration_hard FROM vm_runtimes"
                              " WHERE vm_id = 15")
        self.assertLess(abs((soft - before).total_seconds() - 7200), 5)
        self.assertEqual(hard, datetime.datetime.combine(
            before.date() + datetime.timedelta(days=1), datetime.time(18, 0)))
        self.ok("qa vm id=15 set expiration_hard=never")
        self.assertIsNone(self.one("SELECT vm_expiration_hard FROM vm_runtimes"
                                   " WHERE vm_id = 15")[0])
        self.fails("qa vm id=15 set expiration_soft=next blue moon", "is not a date")

    def test_filtered_commands_act_on_what_they_can(self) -> None:
        self.ok("qa host new name=node1,address=10.0.0.1")
        self.db.query("UPDATE host_runtimes SET state = 'running', ok_ts = now(),"
                      " usable_ram = 1000, usable_cpu = 1000")
        self.ok("qa osf new name=desktops")
        self.ok("qa osf new name=apps")
        self.db.query("UPDATE osfs SET id = 2 WHERE name = 'apps'")
        for login in ("guest1", "guest2", "peter"):
            self.ok(f"qa user new login={login},password=x")
        self.vms("g1")
        self.vms("g2", user="guest2", osf="apps")
        self.vms("p1", user="peter", osf="apps")
        self.renumber_vm("p1", 1)
        self.renumber_vm("g2", 23)
        host = self.one("SELECT id FROM hosts")[0]
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running', host_id = %s"
                      " WHERE vm_id = 23", (host,))

        code, out, err = self.qa('qa4 vm "user~guest%" stop')
        self.assertEqual((code, out), (0, "Total: 1\n"))
        g1 = self.one("SELECT id FROM vms WHERE name = 'g1'")[0]
        self.assertEqual(err, f"qa: vm {g1} (g1) is stopped: only a starting, running or"
                              " debugging vm can be stopped\n")
        self.assertEqual(self.db.query("SELECT vm_id FROM vm_runtimes WHERE vm_cmd = 'stop'"),
                         [(23,)])
        self.assertEqual(self.db.query(
            "SELECT object_id, status FROM log WHERE action = 'vm_stop' ORDER BY object_id"),
            [(23, 0), (g1, 5120)])

        self.assertEqual(self.ok("qa4 vm id=1 start             #Arranque manual"), "Total: 1\n")
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running', vm_cmd = NULL"
                      " WHERE vm_id = 1")
        self.db.query("UPDATE vm_runtimes SET vm_cmd = NULL WHERE vm_id = 23")
        code, out, err = self.qa("qa4 vm osf_id=2 stop          #Parada manual")
        self.assertEqual((code, out, err), (0, "Total: 2\n", ""))

        self.db.query("UPDATE vm_runtimes SET user_state = 'connected', l7r_host_id = %s"
                      " WHERE vm_id = 23", (host,))
        self.assertEqual(self.ok("qa4 vm id=23 disconnect_user  #Forzar la desconexión"),
                         "Total: 1\n")
        document = json.loads(self.ok('qa --format json vm "user~guest%" disconnect_user'))
        self.assertEqual(document["total"], 1)
        self.assertEqual(list(document["failures"]), [str(g1)])

        self.db.query("UPDATE host_runtimes SET ok_ts = now() - interval '1 hour'")
        self.db.query("UPDATE vm_runtimes SET vm_state = 'stopped', host_id = NULL")
        code, out, err = self.qa('qa vm "user~guest%" start')
        self.assertEqual((code, out), (1, ""), "nothing could be started")
        self.assertEqual(err, f"qa: vm 23 cannot start: no host available: none is running,"
                              f" unblocked and alive; vm {g1} cannot start: no host available:"
                              f" none is running, unblocked and alive\n")

    def test_host_get_shows_the_counters(self) -> None:
        self.ok("qa host new name=node1,address=10.0.0.1")
        self.db.query("UPDATE host_counters SET http_requests = 12, auth_attempts = 5,"
                      " auth_ok = 4, nx_attempts = 3, nx_ok = 2, short_sessions = 1")
        listing = self.ok("qa host get")
        header = [c.strip() for c in listing.splitlines()[1].strip("|").split("|")]
        self.assertEqual(header[-6:], ["http_requests", "auth_attempts", "auth_ok",
                                       "nx_attempts", "nx_ok", "short_sessions"])
        row = [c.strip() for c in listing.splitlines()[3].strip("|").split("|")]
        self.assertEqual(row[-6:], ["12", "5", "4", "3", "2", "1"])
        self.assertIn("node1", self.ok("qa host auth_ok>3 get name"))
