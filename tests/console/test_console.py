"""The web console in a real headless Chromium against a real node (``qvd-node --api``:
HKD with the ``process`` hypervisor, L7R, API) on a real PostgreSQL.

Each test is what an administrator does and sees: it logs in through the form, clicks
and types, and waits for the page to show the outcome (never a sleep).  Every page it
visits is saved as a PNG in ``test-artifacts/console/`` once the expected text is on it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.support.api import Session
from tests.support.browser import Browser
from tests.support.console import STAGED_IMAGE, ConsoleNode, log_in, log_out


def choose(browser: Browser, label: str, option: str, within=None) -> None:
    """Pick ``option`` in the select labelled ``label``, once the API has filled it."""
    element = browser.field(label, within)
    browser.wait(lambda: option in [o.text for o in Select(element).options], f"{option!r} in {label}")
    Select(element).select_by_visible_text(option)


def go(browser: Browser, section: str) -> None:
    """Follow a menu link and wait for its page."""
    browser.link(section).click()
    browser.wait(lambda: browser.one("main h1").text.strip() == section, f"the {section} page")


def new_dialog(browser: Browser, section: str, button: str) -> Any:
    """Go to ``section``, press its ``New ...`` button and return the dialog it opens."""
    go(browser, section)
    browser.button(button).click()
    return browser.dialog()


def tick(browser: Browser, within, filter_label: str, item: str) -> None:
    """Tick ``item`` in a searchable checklist of a dialog (with the space bar)."""
    box = browser.field(filter_label, within)
    box.clear()
    box.send_keys(item)
    checkbox = browser.field(item, within)
    checkbox.send_keys(Keys.SPACE)
    assert checkbox.is_selected()


def create(browser: Browser, title: str) -> None:
    """Submit the open dialog and wait for it to close."""
    browser.button(title, browser.dialog()).click()
    browser.no_dialog()


def select_row(browser: Browser, name: str) -> None:
    box = browser.row(name).find_element(By.CSS_SELECTOR, "td.select input")
    if not box.is_selected():
        box.click()


def row_names(browser: Browser) -> list[str]:
    return [r.find_element(By.CSS_SELECTOR, "td[data-column] button.link").text
            for r in browser.find("tbody tr[data-id]")]


def act(browser: Browser, label: str) -> None:
    browser.button(label, browser.one(".selection .actions")).click()


def test_keyboard_login_dashboard_menu_and_logout(node: ConsoleNode, browser: Browser) -> None:
    driver = browser.driver
    driver.get(node.url)
    browser.screenshot("login", "QVD administration", "Tenant", "Login", "Password")
    browser.field("Tenant").send_keys("*", Keys.TAB, "superadmin", Keys.TAB, "not-it", Keys.ENTER)
    browser.wait_text("Wrong credentials - Login again")
    password = browser.field("Password")
    assert driver.switch_to.active_element == password and password.get_attribute("value") == ""
    password.send_keys("superadmin", Keys.ENTER)
    browser.screenshot("dashboard", "Virtual machines", "Host load", "test-node", "Recent failed logins",
                       "failed (3200)")

    # from the page's heading, Shift+Tab walks back into the menu; Enter follows a link
    for _ in range(30):
        if driver.switch_to.active_element.text == "Users":
            break
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert driver.switch_to.active_element.text == "Users"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    browser.wait(lambda: driver.switch_to.active_element.text == "Users"
                 and driver.switch_to.active_element.tag_name == "h1", "the Users heading to have focus")
    # a dialog opens from the keyboard and Escape closes it
    browser.button("New user").send_keys(Keys.ENTER)
    browser.dialog()
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    browser.no_dialog()

    log_out(browser)
    browser.screenshot("logged-out", "You have logged out.", "Log in")


def test_failed_logins_reach_the_audit_log_live(node: ConsoleNode, browser: Browser) -> None:
    driver = browser.driver
    driver.get(node.url)
    browser.one("form.login-form, header.top")
    if browser.find("header.top"):
        log_out(browser)
    browser.field("Tenant").send_keys("*", Keys.TAB, "mallory", Keys.TAB, "guess", Keys.ENTER)
    browser.wait_text("Wrong credentials - Login again")
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Audit log")
    browser.button("Filters").click()
    choose(browser, "Result", "failed")
    browser.field("Action").send_keys("login")
    browser.wait(lambda: any("mallory" in r.text for r in browser.find("tbody tr")),
                 "mallory's failed login in the list")
    assert all("failed (3" in r.text for r in browser.find("tbody tr[data-id]"))
    # another failed login, from elsewhere, shows up without a reload
    node.client().call({"action": "current_admin_setup", "login": "trudy", "password": "x", "tenant": "*"})
    browser.wait(lambda: any("trudy" in r.text for r in browser.find("tbody tr")), "trudy's failed login")
    browser.screenshot("audit-log", "mallory", "trudy", "failed (3200)")


def test_vm_goes_running_live_then_is_refused_blocked_and_filtered(
        node: ConsoleNode, browser: Browser, superadmin: Session) -> None:
    other = superadmin.ok("user_create", arguments={"tenant_id": 1, "name": "bob", "password": "x"})
    osf = superadmin.ok("osf_get_list", filters={"name": "desk"}, fields=["id"])["rows"][0]["id"]
    superadmin.ok("vm_create", arguments={"name": "bob-desk", "user_id": other["rows"][0]["id"],
                                          "osf_id": osf})
    log_in(browser, node.url, "superadmin", "superadmin")
    dialog = new_dialog(browser, "Users", "New user")
    choose(browser, "Tenant", "default", dialog)
    browser.field("Login", dialog).send_keys("ann")
    browser.field("Password", dialog).send_keys("s3cret")
    create(browser, "Create")
    browser.row("ann")

    dialog = new_dialog(browser, "Virtual machines", "New virtual machine")
    browser.field("Name", dialog).send_keys("ann-desk")
    browser.field("User", dialog).send_keys("ann")
    choose(browser, "OSF", "desk (default)", dialog)
    create(browser, "Create")
    browser.wait(lambda: browser.cell("ann-desk", "state") == "stopped", "ann-desk stopped")

    driver = browser.driver
    driver.execute_script("window.sameDocument = true")
    select_row(browser, "ann-desk")
    act(browser, "Start")
    browser.wait(lambda: browser.cell("ann-desk", "state") == "running", "ann-desk running", 60)
    assert driver.execute_script("return window.sameDocument") is True  # no reload happened
    browser.screenshot("vms-running", "ann-desk", "running")

    # deleting a running VM: the API refuses, and the console says why
    act(browser, "Delete")
    browser.button("Delete", browser.dialog()).click()
    browser.wait_text("Unable to remove VM - This VM is running")

    act(browser, "Block")
    browser.wait(lambda: browser.cell("ann-desk", "blocked") == "blocked", "ann-desk blocked")

    browser.field("Search by name").send_keys("ann")
    browser.wait(lambda: [r.get_attribute("data-id") for r in browser.find("tbody tr[data-id]")]
                 and "bob-desk" not in browser.one("tbody").text, "the list filtered by name")
    browser.field("Search by name").send_keys(Keys.CONTROL, "a", Keys.NULL, Keys.BACKSPACE)
    browser.wait(lambda: "bob-desk" in browser.one("tbody").text, "the filter cleared")
    browser.button("Filters").click()
    choose(browser, "State", "running")
    browser.wait(lambda: "bob-desk" not in browser.one("tbody").text and "ann-desk" in browser.one("tbody").text,
                 "only running VMs")
    assert "state=running" in driver.current_url
    browser.screenshot("vms-filtered", "ann-desk", "1 in all")
    go(browser, "Dashboard")
    browser.wait(lambda: "running\n1" in browser.one(".card").text.replace(" ", "\n"), "1 VM running")
    driver.execute_script("document.getElementById('toasts').replaceChildren()")  # README picture
    browser.screenshot("dashboard-running", "Host load", "test-node", "connected now")


def test_disk_images_from_staging_and_by_upload(node: ConsoleNode, browser: Browser) -> None:
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Disk images")
    browser.button("Add disk image").click()
    dialog = browser.dialog()
    choose(browser, "OSF", "desk (default)", dialog)
    choose(browser, "File in the staging folder", STAGED_IMAGE, dialog)
    create(browser, "Add")
    browser.wait(lambda: any(STAGED_IMAGE in r.text and "published" in r.text
                             for r in browser.find("tbody tr[data-id]")), "the staged image published")

    upload = os.path.join(tempfile.mkdtemp(prefix="qvd-upload-"), "uploaded-desktop.tar.gz")
    content = os.urandom(3 << 20)
    with open(upload, "wb") as f:
        f.write(content)
    browser.button("Add disk image").click()
    dialog = browser.dialog()
    choose(browser, "OSF", "desk (default)", dialog)
    browser.field("Upload from this computer", dialog).click()
    browser.field("File on this computer", dialog).send_keys(upload)
    create(browser, "Add")
    browser.wait(lambda: any("uploaded-desktop.tar.gz" in r.text and "published" in r.text
                             for r in browser.find("tbody tr[data-id]")), "the uploaded image published")
    images = os.path.join(node.root, "storage", "images")
    stored = [n for n in os.listdir(images) if n.endswith("-uploaded-desktop.tar.gz")]
    assert len(stored) == 1
    with open(os.path.join(images, stored[0]), "rb") as f:
        assert f.read() == content
    browser.screenshot("disk-images", STAGED_IMAGE, "uploaded-desktop.tar.gz", "published")


def test_a_tenant_admin_with_a_custom_role_sees_and_does_only_what_it_grants(
        node: ConsoleNode, browser: Browser, superadmin: Session) -> None:
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Tenants")
    browser.button("New tenant").click()
    browser.field("Name", browser.dialog()).send_keys("acme")
    create(browser, "Create")
    browser.row("acme")
    acme = superadmin.ok("tenant_get_list", filters={"name": "acme"}, fields=["id"])["rows"][0]["id"]
    superadmin.ok("user_create", arguments={"tenant_id": acme, "name": "acme-ann", "password": "x"})
    superadmin.call("user_create", arguments={"tenant_id": 1, "name": "ann", "password": "x"})  # maybe there

    dialog = new_dialog(browser, "Roles", "New role")
    choose(browser, "Tenant", "acme", dialog)
    browser.field("Name", dialog).send_keys("Helpdesk")
    create(browser, "Create")
    browser.field("Search by name").send_keys("Helpdesk")
    browser.row("Helpdesk").find_element(By.CSS_SELECTOR, "button.link").click()
    dialog = browser.dialog()
    tick(browser, dialog, "Filter acls", "user.see-main.")
    tick(browser, dialog, "Filter acls", "user.update.block")
    tick(browser, dialog, "Filter acls", "user.see.block")
    create(browser, "Save")

    dialog = new_dialog(browser, "Administrators", "New administrator")
    choose(browser, "Tenant", "acme", dialog)
    browser.field("Name", dialog).send_keys("help")
    browser.field("Password", dialog).send_keys("h3lp")
    tick(browser, dialog, "Filter roles", "Helpdesk")
    create(browser, "Create")
    browser.wait(lambda: "Helpdesk" in (browser.cell("help", "roles") or ""), "help holding Helpdesk")
    log_out(browser)

    log_in(browser, node.url, "help", "h3lp", "acme")
    menu = browser.one("nav#nav").text.splitlines()
    assert menu == ["Dashboard", "Users"], menu
    go(browser, "Users")
    browser.row("acme-ann")
    assert row_names(browser) == ["acme-ann"]  # not default's ann
    actions = [b.text for b in browser.find(".selection .actions button")]
    assert actions == ["Block", "Unblock"], actions
    assert not [b for b in browser.find("button") if b.text == "New user"]
    select_row(browser, "acme-ann")
    act(browser, "Block")
    browser.wait(lambda: browser.cell("acme-ann", "blocked") == "blocked", "acme-ann blocked")
    browser.screenshot("tenant-admin-users", "help", "acme-ann", "Block", "1 in all")


def test_configuration_hides_and_refuses_internal_keys(node: ConsoleNode, browser: Browser) -> None:
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Configuration")
    browser.wait(lambda: browser.find("tbody tr[data-key]"), "configuration keys")
    assert not [r for r in browser.find("tbody tr[data-key]") if r.get_attribute("data-key").startswith("internal.")]
    browser.field("Search keys").send_keys("internal")
    browser.wait_text("0 keys")
    browser.button("Set a key").click()
    dialog = browser.dialog()
    browser.field("Key", dialog).send_keys("internal.hkd.agent.ticker.delay")
    browser.field("Value", dialog).send_keys("1")
    browser.button("Set", dialog).click()
    browser.wait(lambda: "Invalid config token (internal.hkd.agent.ticker.delay)" in dialog.text,
                 "the refusal in the dialog")
    dialog.send_keys(Keys.ESCAPE)
    browser.no_dialog()

    search = browser.field("Search keys")
    search.send_keys(Keys.CONTROL, "a", Keys.NULL, Keys.BACKSPACE, "api.ws.delay")
    row = browser.wait(lambda: next(iter(browser.find("tr[data-key='api.ws.delay']")), None), "api.ws.delay")
    value = row.find_element(By.CSS_SELECTOR, "input")
    value.send_keys(Keys.CONTROL, "a", Keys.NULL, "0.2", Keys.ENTER)
    browser.wait(lambda: "changed" in browser.one("tr[data-key='api.ws.delay']").text, "api.ws.delay changed")
    browser.screenshot("configuration", "api.ws.delay", "changed", "Reset to default")
    browser.button("Reset to default").click()
    browser.wait(lambda: "default" in browser.one("tr[data-key='api.ws.delay']").text.split(), "back to default")


def test_an_expired_session_returns_to_the_login_page(
        node: ConsoleNode, browser: Browser, superadmin: Session) -> None:
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Hosts")
    node.db.query("UPDATE session SET expires = 1 WHERE sid <> %s", (superadmin.sid,))
    browser.link("Users").click()
    browser.screenshot("session-expired", "Session expired - Login again")
    browser.field("Tenant").send_keys("*", Keys.TAB, "superadmin", Keys.TAB, "superadmin", Keys.ENTER)
    browser.wait(lambda: browser.one("main h1").text == "Users", "back on the Users page")


def test_a_phone_sized_screen_folds_the_menu(node: ConsoleNode, browser: Browser) -> None:
    log_in(browser, node.url, "superadmin", "superadmin")
    browser.resize(390, 844)
    try:
        browser.wait(lambda: not browser.find("nav#nav")[0].is_displayed(), "the menu folded away")
        browser.button("Menu").click()
        browser.link("Virtual machines").click()
        browser.wait(lambda: browser.one("main h1").text == "Virtual machines", "the VM list")
        assert not browser.find("nav#nav")[0].is_displayed()
        width = browser.driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide"
        browser.screenshot("phone-vms", "Virtual machines", "in all")
    finally:
        browser.resize(1280, 800)


def test_twenty_thousand_users_page_by_page_and_a_mass_block(
        node: ConsoleNode, browser: Browser, superadmin: Session) -> None:
    tenant = superadmin.ok("tenant_create", arguments={"name": "bulk"})["rows"][0]["id"]
    # one statement standing in for 20,000 user_create calls
    node.db.query("INSERT INTO users (tenant_id, login, password, blocked) SELECT %s,"
                  " 'bulk-' || lpad(n::text, 5, '0'), 'x', FALSE FROM generate_series(1, 20000) n",
                  (tenant,))
    log_in(browser, node.url, "superadmin", "superadmin")
    go(browser, "Users")
    browser.button("Filters").click()
    browser.field("Tenant", browser.one(".filters")).send_keys("bulk")
    browser.wait_text("20,000 in all")
    browser.button("Login ▲", css="button.sort").click()  # descending
    browser.wait(lambda: row_names(browser)[:1] == ["bulk-20000"], "the last login first")
    page = browser.one("input.page-number[aria-label='Page number']")
    page.send_keys(Keys.CONTROL, "a", Keys.NULL, "2000", Keys.ENTER)
    browser.wait(lambda: row_names(browser)[-1:] == ["bulk-00001"], "the last page")
    assert "page=2000" in browser.driver.current_url

    browser.field("Search by login").send_keys("bulk-199")
    browser.wait_text("100 in all")
    browser.one("th.select input").click()
    browser.button("Select all 100 matching", css="button.link").click()
    browser.wait_text("100 selected")
    act(browser, "Block")
    browser.wait(lambda: browser.cell(row_names(browser)[0], "blocked") == "blocked", "the page blocked")
    assert node.db.query("SELECT count(*) FROM users WHERE tenant_id = %s AND blocked", (tenant,)) == [(100,)]
    browser.screenshot("users-mass-block", "100 in all", "bulk-19999", "blocked")


def test_single_tenant_mode_asks_for_no_tenant(node: ConsoleNode, browser: Browser) -> None:
    def multitenant(value: str) -> None:
        node.db.query("UPDATE configs SET value = %s WHERE tenant_id = -1 AND key = 'wat.multitenant'",
                      (value,))
        browser.wait(lambda: node.client().call({}, "/api/info")["multitenant"] == int(value),
                     f"the API to read wat.multitenant = {value}")

    browser.driver.get(node.url)
    browser.one("form.login-form, header.top")
    if browser.find("header.top"):
        log_out(browser)
    multitenant("0")
    try:
        browser.driver.get(node.url)
        form = browser.one("form.login-form")
        assert [label.text for label in form.find_elements(By.TAG_NAME, "label")] == ["Login", "Password"]
        browser.field("Login").send_keys("admin", Keys.TAB, "admin", Keys.ENTER)
        browser.wait(lambda: browser.find("header.top .who") and browser.one("header.top .who").text == "admin",
                     "admin logged in, with no tenant shown")
        browser.screenshot("single-tenant", "Dashboard")
        log_out(browser)
    finally:
        multitenant("1")
