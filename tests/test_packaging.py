"""`pip install .` into a fresh virtualenv gives working console scripts and twistd plugins."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from twisted.trial import unittest

from tests.support.postgres import drop_database, new_database
from tests.support.paths import ROOT

LIST_PLUGINS = (
    "from twisted.plugin import getPlugins\n"
    "from twisted.application.service import IServiceMaker\n"
    "print(' '.join(sorted(p.tapname for p in getPlugins(IServiceMaker)"
    " if p.tapname.startswith('qvd-'))))\n"
)

LIST_CONSOLE = (
    "import os\nfrom qvd.api.console import DIRECTORY\n"
    "print(DIRECTORY, *sorted(os.path.relpath(os.path.join(d, f), DIRECTORY)"
    " for d, _, names in os.walk(DIRECTORY) for f in names))\n"
)


def console_files(directory: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), directory)
                  for d, _, names in os.walk(directory) for f in names)


class FreshInstallTests(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp(prefix="qvd-pkg-test-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run_in(self, *argv: str, cwd: str = "/") -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=cwd)
        self.assertEqual(done.returncode, 0, f"{argv}: {done.stderr}")
        return done.stdout

    def test_install_gives_console_scripts_and_plugins(self):
        venv = os.path.join(self.scratch, "venv")
        self.run_in("/usr/bin/python3", "-m", "venv", venv)
        source = os.path.join(self.scratch, "source")
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
            ".venv", "data", ".git", "build", "*.egg-info", "__pycache__"))
        self.run_in(f"{venv}/bin/pip", "install", "-q", "--disable-pip-version-check", source)

        for script in ("qa", "qvd-deploy-db", "qvd-embedded", "qvd-client", "qvd-doctor",
                       "qvd-units", "qvd-node"):
            self.assertIn("usage:", self.run_in(f"{venv}/bin/{script}", "--help"))

        db = new_database()
        self.addCleanup(drop_database, db)
        conf = db.write_conf(self.scratch)
        self.run_in(f"{venv}/bin/qa", "-c", conf, "user", "new", "login=pkg,password=pw")
        self.assertIn("| pkg ", self.run_in(f"{venv}/bin/qa", "-c", conf, "user", "get"))
        units = os.path.join(self.scratch, "units")  # the templates are package data
        self.run_in(f"{venv}/bin/qvd-units", "install", "-c", conf, "--unit-dir", units,
                    "--logrotate-dir", units, "--no-reload")
        self.assertIn(f"ExecStart={venv}/bin/twistd", open(f"{units}/qvd-node.service").read())

        # the web console's files are package data: an installed qvd-api serves them
        console = self.run_in(f"{venv}/bin/python", "-c", LIST_CONSOLE).split()
        self.assertTrue(console[0].startswith(venv), console)
        self.assertEqual(console[1:], console_files(os.path.join(ROOT, "qvd", "console")))

        installed = self.run_in(f"{venv}/bin/python", "-c", LIST_PLUGINS).split()
        self.env["PYTHONPATH"] = ROOT
        in_checkout = self.run_in(f"{venv}/bin/python", "-c", LIST_PLUGINS, cwd=ROOT).split()
        self.assertEqual(installed, in_checkout)
        self.assertIn("qvd-vma", installed)
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "plugins", "__init__.py")))
