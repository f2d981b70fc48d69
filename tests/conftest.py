"""Suite-wide set-up: scratch files out of the checkout, subprocesses on this code."""

from __future__ import annotations

import os

import pytest

from tests.support.paths import ROOT


@pytest.fixture(autouse=True, scope="session")
def _scratch_directory(tmp_path_factory):
    """trial's ``mktemp`` writes under the working directory: make that a temporary one,
    and let the subprocesses tests start import this checkout rather than an installed copy."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("work"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    yield
    os.chdir(previous)
