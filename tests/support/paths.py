"""Where things are: this checkout, how tests run twistd on it, where artefacts go."""

from __future__ import annotations

import os
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ``python -c TWISTD ...`` runs twistd on this checkout (PYTHONPATH=ROOT)
TWISTD = "from twisted.scripts.twistd import run; run()"
ARTIFACTS = os.path.join(ROOT, "test-artifacts")  # screenshots a reader of a failure wants


def scratch_dir(testcase) -> str:
    """A directory the session account can traverse (mkdtemp makes 0700 ones),
    removed when the test's other cleanups (services, processes) are done."""
    path = tempfile.mkdtemp(prefix="qvd-test-")
    os.chmod(path, 0o755)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path
