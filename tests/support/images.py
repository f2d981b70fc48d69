"""The DIs the end-to-end tests boot, built with ``qvd-di build`` and cached by content.

Cached outside the checkout (``$QVD_TEST_CACHE``, default ``/var/cache/qvd-tests``)
under a hash of what the image holds: the builder's base (Debian packages, Twisted,
recipe) and this checkout's ``qvd`` package.  A fresh machine builds them within the
suite; a code change rebuilds only the last step (the base stays cached).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import subprocess
import sys

from qvd.di import builder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("QVD_TEST_CACHE", "/var/cache/qvd-tests")
SUFFIX = {"lxc": "tar", "kvm": "qcow2"}


def content_key(flavour: str) -> str:
    digest = hashlib.sha256(builder.base_spec(flavour, (), builder.node_mirror()).key().encode())
    sources = [os.path.join(ROOT, "twisted", "plugins", "qvd_services.py")]
    for directory, dirs, names in os.walk(os.path.join(ROOT, "qvd")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        sources += [os.path.join(directory, n) for n in sorted(names) if not n.endswith(".pyc")]
    for path in sources:
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]


def image(flavour: str) -> str:
    """The DI's path, built first if the cache has none for this content (blocking)."""
    directory = os.path.join(CACHE, "di")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{flavour}-{content_key(flavour)}.{SUFFIX[flavour]}")
    with open(os.path.join(directory, f"lock.{flavour}"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(path):
            for old in glob.glob(os.path.join(directory, f"{flavour}-*.{SUFFIX[flavour]}")):
                os.unlink(old)
            done = subprocess.run(
                [sys.executable, "-m", "qvd.di.cli", "build", "--flavour", flavour,
                 "--cache", os.path.join(CACHE, "base"), path],
                capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
            if done.returncode != 0:
                raise RuntimeError(f"qvd-di build --flavour {flavour} failed:\n{done.stderr}")
    return path
