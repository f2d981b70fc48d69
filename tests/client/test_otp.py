"""``qvd-client --otp``: the one-time code after the password (the node-level test with a
real TOTP login is in tests/client/test_directory_login.py)."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial import unittest

from qvd.client.cli import with_otp
from tests.support.node import CLIENT
from tests.support.paths import ROOT


class OTPTests(unittest.TestCase):
    def test_the_code_goes_after_the_password(self) -> None:
        self.assertEqual(with_otp("s3cret", "123456", self.fail), "s3cret123456")
        self.assertEqual(with_otp("s3cret", " 123 456 ", self.fail), "s3cret123456")

    def test_without_a_code_it_is_asked_for(self) -> None:
        asked = []
        self.assertEqual(with_otp("pw", "", lambda prompt: asked.append(prompt) or "654321"),
                         "pw654321")
        self.assertEqual(asked, ["One-time code: "])

    def test_a_code_that_is_not_digits_is_a_usage_error(self) -> None:
        with self.assertRaises(ValueError):
            with_otp("pw", "12a456", self.fail)
        run = subprocess.run([sys.executable, "-c", CLIENT, "-h", "127.0.0.1", "-u", "a", "-w",
                              "b", "--otp", "x1"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env={"PYTHONPATH": ROOT}, timeout=60)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("the one-time code must be digits", run.stderr)
        run = subprocess.run([sys.executable, "-c", CLIENT, "-h", "127.0.0.1", "-u", "a", "-w",
                              "b", "--otp"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, env={"PYTHONPATH": ROOT}, timeout=60)
        self.assertEqual(run.returncode, 2, run.stderr)
        self.assertIn("needs a terminal", run.stderr)
