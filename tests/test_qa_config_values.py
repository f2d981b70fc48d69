"""``qa config set`` with the values the Authentication chapter writes: commas, ``=``,
parentheses, pipes (typed through a shell's word splitting), and ``qa config get``
showing them back."""

from __future__ import annotations

import os
import shlex

from tests.conftest import ROOT
from tests.test_qa_manual import QaTestCase

MANUAL_LINES = {
    # (line as the manuals print it, with qa for qa4) -> the value stored
    "qa config set tenant_id=-1,key=l7r.auth.plugins,value=auto,ldap": "auto,ldap",
    "qa config set tenant_id=-1,key=auth.ldap.host,value='ldap://example.com:389'":
        "ldap://example.com:389",
    "qa config set tenant_id=-1,key=auth.ldap.base,value='OU=People,DC=example,DC=com'":
        "OU=People,DC=example,DC=com",
    "qa config set tenant_id=-1,key=auth.ldap.binddn,"
    "value='CN=Administrator,CN=Users,DC=example,DC=com'":
        "CN=Administrator,CN=Users,DC=example,DC=com",
    "qa config set tenant_id=-1,key=auth.ldap.filter,value='(|(uid=%u)(cn=%u))'":
        "(|(uid=%u)(cn=%u))",
    "qa config set tenant_id=-1,key=auth.ldap.filter,"
    "value='(&(objectClass=inetOrgPerson)(cn=%u))'": "(&(objectClass=inetOrgPerson)(cn=%u))",
    "qa config set tenant_id=-1,key=auth.ldap.filter,value='(sAMAccountName=%u)'":
        "(sAMAccountName=%u)",
    'qa config set tenant_id=-1,key=auth.auto.di_tag,value="prueba"': "prueba",
}


class ConfigValueTests(QaTestCase):
    def stored(self, key: str) -> str:
        return self.one("SELECT value FROM configs WHERE tenant_id = -1 AND key = %s", key)[0]

    def test_the_manuals_lines_store_their_whole_value(self):
        for line, value in MANUAL_LINES.items():
            self.ok(line)
            key = line.split("key=")[1].split(",")[0]
            self.assertEqual(self.stored(key), value, line)
            self.assertIn(f"| {value} ", self.ok(f"qa config key={key} get"), line)

    def test_unquoted_values_with_commas_and_equals_run_to_the_end(self):
        self.ok("qa config set tenant_id=-1,key=auth.ldap.binddn,value=CN=Admin,CN=Users,DC=x")
        self.assertEqual(self.stored("auth.ldap.binddn"), "CN=Admin,CN=Users,DC=x")
        self.ok("qa config set key=auth.ldap.host,value=ldap://a ldap://b")
        self.assertEqual(self.stored("auth.ldap.host"), "ldap://a ldap://b")

    def test_named_arguments_after_the_value_are_still_arguments(self):
        self.ok("qa config set value=auto,ldap,key=l7r.auth.plugins,tenant_id=-1")
        self.assertEqual(self.stored("l7r.auth.plugins"), "auto,ldap")
        self.ok("qa config set tenant_id=-1,key=l7r.auth.plugins default")
        self.assertEqual(self.db.query("SELECT * FROM configs WHERE key = 'l7r.auth.plugins'"), [])


class ReadmeLinesTests(QaTestCase):
    def test_every_qa_config_set_line_of_the_readme_stores_its_value(self):
        """The README's LDAP / AD lines, run as written, store what follows ``value=``."""
        with open(os.path.join(ROOT, "README.md")) as f:
            lines = [line for line in f.read().splitlines()
                     if line.startswith("qa config set tenant_id=-1,key=")]
        self.assertGreaterEqual(len(lines), 14)
        self.ok("qa osf new name=desk")
        for line in lines:
            self.ok(line)
            words = shlex.split(line)[3]
            key = words.split("key=")[1].split(",")[0]
            value = words.split(",value=", 1)[1]
            self.assertEqual(self.stored(key), value, line)

    stored = ConfigValueTests.stored
