"""Plugins installed the way an administrator installs one: a module dropped into a
``twisted/plugins`` directory on the path (removed again at cleanup)."""

from __future__ import annotations

import os
import textwrap

import twisted.plugins


def install_plugin(testcase, module: str, source: str) -> None:
    """``twisted/plugins/<module>.py`` holding ``source`` (dedented), found by getPlugins."""
    directory = os.path.join(os.path.abspath(testcase.mktemp()), "twisted", "plugins")
    os.makedirs(directory)
    with open(os.path.join(directory, f"{module}.py"), "w") as f:
        f.write(textwrap.dedent(source))
    twisted.plugins.__path__.append(directory)
    testcase.addCleanup(twisted.plugins.__path__.remove, directory)
