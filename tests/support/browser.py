"""A real headless Chromium (Debian's ``chromium`` and ``chromedriver``) driven with
Selenium, for the web console's tests.

Chromium runs with the flags this machine needs (no sandbox as root, no GPU, no
background networking: the machine has no internet) and a fresh profile.  It
ignores certificate errors because the API under test has a self-signed
certificate.  Every wait is bounded and on a condition of the page, never a
sleep; screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Optional

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.paths import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--ignore-certificate-errors", "--lang=en-US")
SHOTS = os.path.join(ARTIFACTS, "console")


class Browser:
    """One Chromium window of ``width`` x ``height`` CSS pixels."""

    def __init__(self, width: int = 1280, height: int = 800):
        self.profile = tempfile.mkdtemp(prefix="qvd-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(CHROMEDRIVER, log_output=os.path.join(self.profile, "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.resize(width, height)

    def resize(self, width: int, height: int) -> None:
        """The viewport (not the window) becomes ``width`` x ``height``."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # -- finding and waiting ---------------------------------------------------------

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """``condition()`` once it is truthy (stale elements count as not yet)."""
        def attempt(_: Any) -> Any:
            try:
                return condition()
            except StaleElementReferenceException:
                return None
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(attempt)
        except TimeoutException:
            raise AssertionError(f"waited {timeout} s for {what}; the page says:\n"
                                 f"{self.text()[:3000]}\nconsole: {self.console_errors()}")

    def find(self, css: str, within: Optional[WebElement] = None) -> list[WebElement]:
        return (within or self.driver).find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str, what: Optional[str] = None, timeout: float = 15.0) -> WebElement:
        """The first visible element matching ``css``, once there is one."""
        return self.wait(lambda: next((e for e in self.find(css) if e.is_displayed()), None),
                         what or css, timeout)

    def button(self, label: str, within: Optional[WebElement] = None, css: str = "button") -> WebElement:
        """A visible, enabled button whose text is ``label``."""
        def found() -> Optional[WebElement]:
            scope = within or self.driver
            for element in scope.find_elements(By.CSS_SELECTOR, css):
                if element.text.strip() == label and element.is_displayed() and element.is_enabled():
                    return element
            return None
        return self.wait(found, f"a button {label!r}")

    def link(self, label: str) -> WebElement:
        return self.wait(lambda: next((a for a in self.find("a") if a.text.strip() == label
                                       and a.is_displayed()), None), f"a link {label!r}")

    def field(self, label: str, within: Optional[WebElement] = None) -> WebElement:
        """The control a visible ``<label>`` with this text names."""
        def found() -> Optional[WebElement]:
            for element in (within or self.driver).find_elements(By.TAG_NAME, "label"):
                if element.text.strip() == label and element.is_displayed():
                    return self.driver.find_element(By.ID, element.get_attribute("for"))
            return None
        return self.wait(found, f"a field labelled {label!r}")

    def dialog(self) -> WebElement:
        return self.one("dialog[open]", "a dialog")

    def no_dialog(self) -> None:
        self.wait(lambda: not self.find("dialog[open]"), "the dialog to close")

    def text(self) -> str:
        return self.driver.execute_script("return document.body ? document.body.innerText : ''")

    def wait_text(self, text: str, timeout: float = 15.0) -> None:
        self.wait(lambda: text in self.text(), f"the text {text!r}", timeout)

    def row_now(self, name: str) -> Optional[WebElement]:
        """The list row whose name cell is ``name``, if there is one now."""
        for row in self.find("tbody tr[data-id]"):
            cells = row.find_elements(By.CSS_SELECTOR, "td[data-column] button.link")
            if cells and cells[0].text.strip() == name:
                return row
        return None

    def row(self, name: str) -> WebElement:
        return self.wait(lambda: self.row_now(name), f"a row named {name!r}")

    def cell(self, name: str, column: str) -> Optional[str]:
        """The text of a row's cell now (None while there is no such row or column)."""
        row = self.row_now(name)
        cells = row.find_elements(By.CSS_SELECTOR, f"td[data-column={column}]") if row else []
        return cells[0].text.strip() if cells else None

    def console_errors(self) -> list[str]:
        try:
            entries = self.driver.get_log("browser")
        except Exception:
            return []
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]

    # -- evidence ---------------------------------------------------------------------

    def screenshot(self, name: str, *expected: str) -> str:
        """A PNG of the page in ``test-artifacts/console/``, taken once each ``expected``
        text is on it."""
        for text in expected:
            self.wait_text(text)
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, f"{name}.png")
        self.driver.save_screenshot(path)
        return path
