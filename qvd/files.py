"""Small file operations the node's parts share (blocking: call them in a thread)."""

from __future__ import annotations

import os


def replace(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` at once: a reader never sees half a file."""
    partial = path + ".new"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(partial, mode)
    os.replace(partial, path)


def unlink(path: str) -> None:
    """Remove ``path``; one already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
