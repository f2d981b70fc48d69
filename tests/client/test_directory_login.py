"""A directory user who never existed in QVD-DB logs in with ``qvd-client`` through a real
node (``twistd qvd-node``: L7R over TLS, HKD, ``process`` hypervisor) configured with the
README's ``auto,ldap`` lines, gets a VM created and started, and sees its desktop; two
first logins at once create one user and one VM; then ``TOTP`` joins the chain and
``qvd-client --otp`` logs in once per code."""

from __future__ import annotations

import json
import os
import re
import shlex
import time

from twisted.internet.defer import DeferredList, inlineCallbacks

from qvd.totp import Window, code, decode_secret
from tests.support.node import NodeTestCase
from tests.support.x11 import start_xvfb, window
from tests.support.waiting import poll_blocking
from tests.support import slapd

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "README.md")
EXAMPLE_HOSTS = "ldaps://ldap.example.com,ldaps://ldap2.example.com"


def readme_lines() -> list[str]:
    """The ``qa config set`` lines of the README's auth example block."""
    with open(README) as f:
        text = f.read()
    block = re.search(r"<!-- auth-example[^>]*-->\n```\n(.*?)```", text, re.S)
    assert block is not None, "README lost its auth example"
    return [line for line in block.group(1).splitlines() if line.startswith("qa config set")]


class DirectoryLoginTests(NodeTestCase):
    def configure_from_the_readme(self) -> None:
        """The README's lines, with the test directory for its example hosts: a dead
        server first (fail-over), then the test slapd over LDAPS with the test CA."""
        directory = slapd.shared()
        hosts = f"ldap://127.0.0.1:{slapd.dead_port()},{directory.ldaps_url}"
        lines = readme_lines()
        self.assertIn(EXAMPLE_HOSTS, "\n".join(lines))
        for line in lines:
            self.qa(" ".join(shlex.split(line.replace(EXAMPLE_HOSTS, hosts))[1:]))
        self.qa(f"config set tenant_id=-1,key=auth.ldap.tls.ca,value={directory.ca_path}")
        self.assertEqual(self.db.query("SELECT id FROM osfs WHERE name = 'desk'"), [(10000,)])

    def explain_vm_of(self, login: str, *clients) -> str:
        """``explain`` with the nxagent log of ``login``'s VM."""
        made = [row[2] for row in self.provisioned(login) if row[2] is not None]
        if made:
            self.vm_id = made[0]
        return self.explain(*clients)

    def provisioned(self, login: str) -> list[tuple]:
        return self.db.query(
            "SELECT u.id, u.password, v.id, v.name, v.osf_id FROM users u"
            " LEFT JOIN vms v ON v.user_id = u.id WHERE u.login = %s", (login,))

    @inlineCallbacks
    def list_vms(self, login: str, password: str, *extra: str):
        code_, out, err = yield self.run_client("-l", "--json", *extra, user=(login, password))
        return code_, (json.loads(out) if code_ == 0 else err)

    @inlineCallbacks
    def test_first_directory_login_gets_a_desktop_then_totp(self):
        self.configure_from_the_readme()
        yield self.start_node()
        self.assertEqual(self.provisioned("carol"), [])
        display = yield start_xvfb(self)
        client = self.client("-o", display=display, user=("carol", "carol-pw"))
        try:
            shown = yield poll_blocking(lambda: client.ended.called or window(display, "xclock"), bool,
                               90, "carol's desktop")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain_vm_of('carol', client)}") from None
        self.assertIsNot(shown, True, f"qvd-client exited{self.explain_vm_of('carol', client)}")
        [(user_id, password, vm_id, name, osf_id)] = self.provisioned("carol")
        self.assertEqual((password, name, osf_id), (None, "carol-1", 10000))
        self.assertEqual(self.db.query("SELECT vm_state, user_state FROM vm_runtimes"
                                       " WHERE vm_id = %s", (vm_id,)), [("running", "connected")])
        self.assertIn("Connection established", client.stderr)

        # two first logins of the same new user at the same moment
        runs = yield DeferredList([self.list_vms("dave", "dave-pw") for _ in range(2)],
                                  consumeErrors=True)
        [(dave_id, _, dave_vm, dave_vm_name, _)] = self.provisioned("dave")
        for ok, (status, vms) in runs:
            self.assertEqual((ok, status), (True, 0), vms)
            self.assertEqual([(vm["id"], vm["name"]) for vm in vms], [(dave_vm, "dave-1")])
        code_, err = (yield self.list_vms("dave", "wrong"))
        self.assertEqual(code_, 3, err)

        # TOTP after the directory password: enrolled with qa, typed with --otp
        self.qa("config set tenant_id=-1,key=l7r.auth.plugins,value=auto,ldap,TOTP")
        secret = json.loads(self.qa("--format json user carol totp new"))["rows"][0]["secret"]
        status = yield poll_status(self, "carol", "carol-pw", 3)
        self.assertEqual(status, 3, "a password alone no longer lets carol in")
        one_time = code(decode_secret(secret), Window().step(time.time()))
        status, vms = yield self.list_vms("carol", "carol-pw", "--otp", one_time)
        self.assertEqual(status, 0, vms)
        self.assertEqual([vm["name"] for vm in vms], ["carol-1"])
        status, err = yield self.list_vms("carol", "carol-pw", "--otp", one_time)
        self.assertEqual(status, 3, "the same code twice")


@inlineCallbacks
def poll_status(testcase: DirectoryLoginTests, login: str, password: str, wanted: int):
    """Log in until the status is ``wanted`` (the L7R reloads its configuration on a NOTIFY)."""
    deadline = time.monotonic() + 20
    while True:
        status, _ = yield testcase.list_vms(login, password)
        if status == wanted or time.monotonic() > deadline:
            return status
