"""Every ``qa4`` example of the manuals' "Basic administrative operations" and
"Commonly used commands" sections, typed as the manual prints it (through a
shell's word splitting), with ``qa`` for ``qa4``, against a real QVD-DB.

The HKD examples (``vm ... start|stop|disconnect_user``) belong to the HKD
and are exercised there.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys

from twisted.trial import unittest

from qvd.admin.cli import main
from qvd.passwords import qvd_hash
from tests.support.postgres import drop_database, new_database


class QaTestCase(unittest.TestCase):
    """A fresh QVD-DB, a node.conf for it and a storage tree per test."""

    def setUp(self):
        self.db = new_database()
        self.addCleanup(drop_database, self.db)
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "storage", "staging"))
        self.conf = self.db.write_conf(
            self.root, f"path.storage.root = {self.root}/storage\n")

    def qa(self, line: str) -> tuple[int, str, str]:
        """Run a manual line as a shell would split it: ``# ...`` is a comment."""
        words = shlex.split(line, comments=True)
        self.assertIn(words[0], ("qa", "qa4"))
        out, err = io.StringIO(), io.StringIO()
        code = main(["-c", self.conf] + words[1:], out, err)
        return code, out.getvalue(), err.getvalue()

    def ok(self, line: str) -> str:
        code, out, err = self.qa(line)
        self.assertEqual((code, err), (0, ""), f"{line!r} failed")
        return out

    def fails(self, line: str, message: str, code: int = 1) -> None:
        got, out, err = self.qa(line)
        self.assertEqual(got, code, f"{line!r}: {out}{err}")
        self.assertEqual(out, "")
        self.assertIn(message, err)
        self.assertEqual(len(err.strip().splitlines()), 1, "one line, no traceback")

    def staging(self, name: str, content: bytes = b"disk image") -> str:
        path = os.path.join(self.root, "storage", "staging", name)
        with open(path, "wb") as f:
            f.write(content)
        return path

    def one(self, sql: str, *params):
        rows = self.db.query(sql, params)
        self.assertEqual(len(rows), 1, f"{sql} {params}: {rows}")
        return rows[0]


class BasicOperationsTests(QaTestCase):
    def test_config_set_get_and_back_to_default(self):
        self.ok('qa4 config set tenant_id=-1,key=myproperty,value="this is a value"')
        self.assertEqual(self.one("SELECT tenant_id, value FROM configs WHERE key = 'myproperty'"),
                         (-1, "this is a value"))
        listing = self.ok("qa4 config get")
        self.assertIn("| -1        | myproperty      | this is a value |", listing)
        self.assertTrue(listing.endswith("Total: 2\n"))
        self.ok("qa4 config set tenant_id=-1,key=qvd.prop,value=x")
        self.ok("qa4 config set tenant_id=-1,key=qvd.prop default")
        self.assertEqual(self.db.query("SELECT * FROM configs WHERE key = 'qvd.prop'"), [])

    def test_host_new_and_del(self):
        self.assertEqual(self.ok("qa4 host new name=myhost, address=10.3.15.1"), "Total: 1\n")
        host_id, address, frontend, backend = self.one(
            "SELECT id, address, frontend, backend FROM hosts WHERE name = 'myhost'")
        self.assertEqual((host_id, address, frontend, backend), (10000, "10.3.15.1", True, True))
        self.assertEqual(self.one("SELECT state, blocked FROM host_runtimes WHERE host_id = %s",
                                  host_id), ("stopped", False))
        self.one("SELECT 1 FROM host_counters WHERE host_id = %s AND http_requests = 0", host_id)
        self.ok("qa4 host name=myhost del")
        self.assertEqual(self.db.query("SELECT * FROM hosts"), [])
        self.assertEqual(self.db.query("SELECT * FROM host_runtimes"), [])

    def test_osf_new_with_defaults_and_get(self):
        self.ok("qa4 osf new name=myOSF")
        self.assertEqual(
            self.one("SELECT tenant_id, memory, use_overlay, user_storage_size FROM osfs"
                     " WHERE name = 'myOSF'"), (1, 256, True, None))
        listing = self.ok("qa4 osf get")
        self.assertIn("| myOSF |", listing)
        self.assertIn("Total: 1", listing)

    def test_di_new_copies_the_image_and_tags_it(self):
        self.staging("test-image.tar.gz", b"first image")
        self.ok("qa4 osf new name=retest")
        self.ok("qa4 di new disk_image=test-image.tar.gz, osf=retest")
        di_id, path, version = self.one("SELECT id, path, version FROM dis")
        self.assertEqual(path, f"{di_id}-test-image.tar.gz")
        with open(os.path.join(self.root, "storage", "images", path), "rb") as f:
            self.assertEqual(f.read(), b"first image")
        tags = self.db.query("SELECT tag, fixed FROM di_tags WHERE di_id = %s ORDER BY tag",
                             (di_id,))
        self.assertEqual(tags, [(version, True), ("default", False), ("head", False)])
        self.assertRegex(version, r"^\d{4}-\d\d-\d\d-000$")
        self.assertIn(path, self.ok("qa4 di get"))

    def test_second_di_takes_head_and_tag_moves_default(self):
        self.staging("test-image.tar.gz")
        self.staging("mydi")
        self.ok("qa4 osf new name=retest")
        self.ok("qa4 di new disk_image=test-image.tar.gz, osf=retest")
        self.ok("qa4 di new disk_image=mydi, osf=retest")
        first, second = [row[0] for row in self.db.query("SELECT id FROM dis ORDER BY id")]

        def tags(di_id):
            return sorted(r[0] for r in self.db.query(
                "SELECT tag FROM di_tags WHERE di_id = %s AND NOT fixed", (di_id,)))

        self.assertEqual((tags(first), tags(second)), (["default"], ["head"]))
        self.assertRegex(self.one("SELECT version FROM dis WHERE id = %s", second)[0], r"-001$")
        # the manual's "disk_image=mydi" names the DI by its stored file name
        self.ok(f"qa4 di disk_image={second}-mydi tag default, head, mytag")
        self.assertEqual((tags(first), tags(second)), ([], ["default", "head", "mytag"]))
        version = self.one("SELECT version FROM dis WHERE id = %s", first)[0]
        self.fails(f"qa di id={second} tag {version}", "is fixed")

    def test_vm_di_tag_for_all_and_for_one(self):
        self._peter_with_vms("myvm", "other")
        self.ok("qa4 vm set di_tag=default")
        self.assertEqual(self.db.query("SELECT DISTINCT di_tag FROM vms"), [("default",)])
        self.ok("qa4 vm name=myvm set di_tag=software_bug_fixed")
        self.ok("qa4 vm name=myvm set di_tag=default")
        self.assertEqual(self.one("SELECT di_tag FROM vms WHERE name = 'myvm'")[0], "default")

    def _peter_with_vms(self, *names: str) -> None:
        self.ok("qa4 user new login=peter,password=s3cr3t")
        self.ok("qa4 osf new name=myOFS")
        for name in names:
            self.ok(f"qa4 vm new name={name},user=peter,osf=myOFS,di_tag=old")

    def test_users_new_del_get_and_password_reset(self):
        self.ok("qa4 user new login=peter,password=s3cr3t")
        self.assertEqual(self.one("SELECT password, tenant_id FROM users WHERE login = 'peter'"),
                         (qvd_hash("s3cr3t", "qvd1234"), 1))
        self.ok("qa user new login=guest3,password=x")
        self.ok("qa user new login=Guest,password=old")
        self.ok("qa4 user login=guest3 del")
        self.assertEqual(self.db.query("SELECT login FROM users ORDER BY login"),
                         [("guest",), ("peter",)])
        listing = self.ok("qa4 user get")
        self.assertIn("| peter |", listing)
        self.assertIn("Total: 2", listing)
        self.ok("qa4 user name=guest set passwd=newpassword")
        self.assertEqual(self.one("SELECT password FROM users WHERE login = 'guest'")[0],
                         qvd_hash("newpassword", "qvd1234"))

    def test_salt_from_the_database_is_used(self):
        self.ok("qa config set key=l7r.auth.plugin.default.salt,value=pepper")
        self.ok("qa user new login=salty,password=pw")
        self.assertEqual(self.one("SELECT password FROM users")[0], qvd_hash("pw", "pepper"))

    def test_vm_new_by_ids_and_by_names_then_del(self):
        # the manual's ids 1: a database migrated from old QVD versions has them
        self.db.query("INSERT INTO users (id, tenant_id, login) VALUES (1, 1, 'legacy')")
        self.db.query("INSERT INTO osfs (id, tenant_id, name, memory, use_overlay)"
                      " VALUES (1, 1, 'legacyosf', 256, true)")
        self.ok("qa4 vm new name=GuestVM,user_id=1 osf_id=1")
        vm_id, ip = self.one("SELECT id, ip FROM vms WHERE user_id = 1 AND osf_id = 1")
        self.assertEqual(ip, "10.0.255.254", "highest free address of 10.0.0.100/16")
        self.assertEqual(self.one("SELECT vm_state, user_state, blocked FROM vm_runtimes"
                                  " WHERE vm_id = %s", vm_id), ("stopped", "disconnected", False))
        self.one("SELECT run_attempts FROM vm_counters WHERE vm_id = %s", vm_id)
        self._peter_with_vms()
        self.ok("qa4 vm new name=GuestVM,user=peter,osf=myOFS")
        self.assertEqual(self.one("SELECT ip FROM vms WHERE id <> %s", vm_id)[0], "10.0.255.253")
        self.ok('qa4 vm "name=GuestVM" del')
        self.assertEqual(self.db.query("SELECT * FROM vms"), [])
        self.assertEqual(self.db.query("SELECT * FROM vm_runtimes"), [])

    def test_vm_block_and_unblock(self):
        self._peter_with_vms("GuestVM", "other")
        other = self.one("SELECT id FROM vms WHERE name = 'other'")[0]
        self.ok(f'qa4 vm "id={other}" block')
        self.ok('qa4 vm "name=GuestVM" block')
        self.assertEqual(self.db.query("SELECT count(*) FROM vm_runtimes WHERE blocked"), [(2,)])
        self.ok('qa4 vm "name=GuestVM "unblock')  # as printed in the 4.0 manual
        self.assertEqual(
            self.db.query("SELECT v.name FROM vms v JOIN vm_runtimes r ON r.vm_id = v.id"
                          " WHERE r.blocked"), [("other",)])

    def test_custom_properties(self):
        self.ok("qa user new login=myuser,password=x")
        self.ok("qa user new login=juan,password=x")
        self.ok("qa4 user name=myuser set property mykey=myvalue, yourkey=yourvalue")
        self.ok("qa user name=juan set property beverage=coffee, food=bread")
        listing = self.ok("qa4 user get property")
        self.assertIn("| myuser | yourkey  | yourvalue |", listing)
        self.assertIn("Total: 4", listing)
        self.ok("qa4 user name=juan property del beverage")
        self.assertEqual(
            self.db.query("SELECT u.login, pl.key, p.value FROM user_properties p"
                          " JOIN users u ON u.id = p.user_id"
                          " JOIN qvd_object_properties_list q ON q.id = p.property_id"
                          " JOIN properties_list pl ON pl.id = q.property_id ORDER BY 1, 2"),
            [("juan", "food", "bread"), ("myuser", "mykey", "myvalue"),
             ("myuser", "yourkey", "yourvalue")])


class CommonlyUsedCommandsTests(QaTestCase):
    def test_host_maintenance(self):
        for name, address in (("qvd1", "192.168.0.2"), ("qvd2", "192.168.0.3"),
                              ("other", "192.168.0.4")):
            self.ok(f"qa host new name={name},address={address}")
        self.ok("qa4 host name~'qvd%' block  # block the access to any node whose name starts")
        self.assertEqual(self.db.query("SELECT h.name FROM hosts h JOIN host_runtimes r"
                                       " ON r.host_id = h.id WHERE r.blocked ORDER BY 1"),
                         [("qvd1",), ("qvd2",)])
        listing = self.ok("qa4 host address='192.168.0.2' get  # list the details")
        self.assertIn("| qvd1 | 192.168.0.2 | 1 ", listing)
        self.assertIn("Total: 1", listing)
        self.ok("qa4 host name~'qvd%' unblock # unblock the access")
        self.assertEqual(self.db.query("SELECT count(*) FROM host_runtimes WHERE blocked"), [(0,)])

    def test_vm_maintenance(self):
        self.db.query("INSERT INTO users (id, tenant_id, login) VALUES (5, 1, 'five')")
        self.ok("qa osf new name=o")
        for name in ("a", "b", "test"):
            self.ok(f"qa vm new name={name},user_id=5,osf=o")
        self.ok("qa4 vm user_id=5 block          #Bloquear el acceso a máquinas cuyo usuario")
        self.assertEqual(self.db.query("SELECT count(*) FROM vm_runtimes WHERE blocked"), [(3,)])
        self.ok("qa4 vm name=test unblock      #Desbloquear el acceso")
        self.assertEqual(self.db.query("SELECT count(*) FROM vm_runtimes WHERE blocked"), [(2,)])
        self.ok("qa4 vm user_id=5 del          #Borrar todas las máquinas")
        self.assertEqual(self.db.query("SELECT count(*) FROM vms"), [(0,)])


class FiltersAndOutputTests(QaTestCase):
    def setUp(self):
        super().setUp()
        self.ok("qa osf new name=o")
        for login in ("qvd_43", "qvd_75", "ana"):
            self.ok(f"qa user new login={login},password=x")
            self.ok(f"qa vm new name=Desktop_{login},user={login},osf=o")

    def test_manual_filter_example(self):
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running' WHERE vm_id ="
                      " (SELECT id FROM vms WHERE name = 'Desktop_qvd_75')")
        out = self.ok('qa4 vm "user~qvd%,state=stopped,user_state=disconnected" get')
        self.assertIn("Desktop_qvd_43", out)
        self.assertNotIn("Desktop_qvd_75", out)
        self.assertNotIn("Desktop_ana", out)
        header = out.splitlines()[1]
        self.assertEqual([c.strip() for c in header.strip("|").split("|")],
                         ["id", "tenant", "name", "blocked", "user", "host", "di", "ip",
                          "ip_in_use", "di_in_use", "state", "user_state"])
        self.assertTrue(out.endswith("Total: 1\n"))

    def test_default_key_fields_and_order(self):
        out = self.ok("qa vm Desktop_ana get name, ip")
        self.assertIn("| Desktop_ana | 10.0.255.252 |", out)
        out = self.ok("qa vm get name order desc name")
        names = [line.strip("| ") for line in out.splitlines()[3:6]]
        self.assertEqual(names, ["Desktop_qvd_75", "Desktop_qvd_43", "Desktop_ana"])

    def test_or_not_lists_and_ranges(self):
        ids = [r[0] for r in self.db.query("SELECT id FROM vms ORDER BY id")]

        def names(filters: str) -> list[str]:
            out = self.ok(f"qa --format json vm {shlex.quote(filters)} get name order name")
            return [row["name"] for row in json.loads(out)["rows"]]

        self.assertEqual(names("user=ana; user=qvd_75"), ["Desktop_ana", "Desktop_qvd_75"])
        self.assertEqual(names("!user~qvd%"), ["Desktop_ana"])
        self.assertEqual(names(f"id=[{ids[0]},{ids[2]}]"), ["Desktop_ana", "Desktop_qvd_43"])
        self.assertEqual(names(f"id=[{ids[1]}:{ids[2]}]"), ["Desktop_ana", "Desktop_qvd_75"])
        self.assertEqual(names("!host=node1"), ["Desktop_ana", "Desktop_qvd_43",
                                                "Desktop_qvd_75"])

    def test_json_output(self):
        document = json.loads(self.ok("qa --format json user ana get id, login, blocked"))
        self.assertEqual(document["total"], 1)
        self.assertEqual(document["rows"][0]["login"], "ana")
        self.assertEqual(document["rows"][0]["blocked"], 0)
        self.assertEqual(json.loads(self.ok("qa --format json vm block")), {"total": 3})
        created = json.loads(self.ok("qa --format json osf new name=scripted"))
        self.assertEqual(created["id"], self.one("SELECT id FROM osfs WHERE name = 'scripted'")[0])

    def test_errors_are_one_clear_line(self):
        self.fails("qa vm bogus=1 get", "unknown key 'bogus' for vm")
        self.fails("qa vm id=abc get", "'id' must be an integer")
        self.fails("qa vm name=(x get", "filter syntax error")
        self.fails("qa vm frob", "no action", code=2)
        self.fails("qa gadget get", "unknown object 'gadget'")
        self.fails("qa user new login=ana,password=x", "already exists")
        self.fails("qa vm new name=z,user=nobody,osf=o", "no such user: nobody")
        self.fails("qa user new login=x,colour=red", "unknown argument 'colour'")
        self.fails("qa osf block", "osf objects cannot be blocked")
        self.fails("qa host new name=h,address=not-an-ip", "must be an IP address")
        self.fails("qa user ana del", "still referenced")
        self.fails("qa di new disk_image=missing.tar.gz,osf=o", "does not exist")
        self.fails("qa config set key=" + "k" * 65 + ",value=1", "longer than 64")
        self.fails("qa vm name=x get order", "'order' needs at least one field", code=2)
        self.db.query("UPDATE vm_runtimes SET vm_state = 'running'")
        self.fails("qa vm Desktop_ana del", "stop it before deleting it")

    def test_console_script_and_unreachable_database(self):
        env = {**os.environ, "QVD_CONFIG": self.conf}
        done = subprocess.run([sys.executable, "-m", "qvd.admin.cli", "user", "ana", "get"],
                              capture_output=True, text=True, env=env)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("| ana ", done.stdout)
        bad = os.path.join(self.root, "bad.conf")
        with open(bad, "w") as f:
            f.write("database.host = 127.0.0.1\ndatabase.port = 1\ndatabase.password = x\n")
        done = subprocess.run([sys.executable, "-m", "qvd.admin.cli", "-c", bad, "vm", "get"],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r"^qa: cannot connect to database 'qvd' on 127.0.0.1:1")
        self.assertNotIn("Traceback", done.stderr)
