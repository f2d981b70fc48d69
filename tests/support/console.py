"""The web console's test bench: a whole node (``twistd qvd-node --api``: the HKD with
the ``process`` hypervisor, the L7R and the API over TLS) on a test QVD-DB, and the
console's login form driven in a real Chromium (``tests.support.browser``)."""

from __future__ import annotations

import os
import shutil
import tempfile

from selenium.webdriver.common.keys import Keys

from tests.support.admin import qa
from tests.support.api import RunningAPI
from tests.support.browser import Browser
from tests.support.hkd import TIMERS, kill_vmas
from tests.support.postgres import TestDatabase
from qvd.stream.sockets import free_port

STAGED_IMAGE = "staged-desktop.tar.gz"


class ConsoleNode(RunningAPI):
    """A node with host ``test-node`` and OSF ``desk`` (with a disk image) in tenant
    ``default``, and a file in its staging folder."""

    def __init__(self, db: TestDatabase):
        self.root = tempfile.mkdtemp(prefix="qvd-console-test-")
        os.chmod(self.root, 0o755)  # the VMs' session account must reach their homes
        account = "vm.process.account = nobody\n" if os.geteuid() == 0 else ""
        super().__init__(db, self.root, (
            f"nodename = test-node\nvm.hypervisor = process\n{account}"
            f"l7r.port = {free_port()}\nl7r.address = 127.0.0.1\npath.log = {self.root}/log\n"
            f"path.l7r.ssl.key = {self.root}/api-key.pem\npath.l7r.ssl.cert = {self.root}/api-cert.pem\n"
            f"api.ws.delay = 0.1\n{TIMERS}"), plugin=("qvd-node", "--api"))
        staging = os.path.join(self.root, "storage", "staging")
        image = os.path.join(staging, "desk.tar.gz")
        with open(image, "wb") as f:
            f.write(b"a DI the process hypervisor does not unpack")
        with open(os.path.join(staging, STAGED_IMAGE), "wb") as f:
            f.write(os.urandom(64 * 1024))
        self.qa("host new name=test-node,address=127.0.0.1")
        self.qa("osf new name=desk")
        self.qa(f"di new disk_image={image},osf=desk")

    def qa(self, line: str) -> str:
        return qa(self.conf, line)

    def destroy(self) -> None:
        self.stop()
        kill_vmas(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def log_in(browser: Browser, url: str, login: str, password: str, tenant: str = "*") -> None:
    """Load the console and log in with the keyboard only (Tab between fields, Enter),
    after logging out whoever was logged in."""
    browser.driver.get(url)
    browser.one("form.login-form, header.top", "the login form or the console")
    if browser.find("header.top"):
        log_out(browser)
    browser.field("Tenant").send_keys(tenant, Keys.TAB, login, Keys.TAB, password, Keys.ENTER)
    browser.one("header.top", "the console after logging in")
    browser.wait(lambda: login in browser.one("header.top .who").text, f"{login} to be logged in")


def log_out(browser: Browser) -> None:
    browser.button("Log out").click()
    browser.wait_text("You have logged out.")
