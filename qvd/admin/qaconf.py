"""``qa.conf``: where ``qa --api`` finds its API, as ``qa4`` does.

Files ``/etc/qvd/qa.conf``, ``~/.qvd/qa.conf``, ``./qa.conf`` (later ones win),
keys ``qa.url``, ``qa.tenant``, ``qa.login``, ``qa.password``, ``qa.format``,
``qa.insecure``, ``qa.ca``; command-line options win over all of them.  The
session of ``qa login`` is kept in ``~/.qvd/qa.session`` (mode 0600) until
``qa logout``.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from qvd.config import load_file, parse_bool

FILES = ("/etc/qvd/qa.conf", "~/.qvd/qa.conf", "./qa.conf")
SESSION_FILE = "~/.qvd/qa.session"


def read(files: tuple[str, ...] = FILES) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in files:
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            values.update({k: v for k, v in load_file(path).items() if k.startswith("qa.")})
    return values


def flag(values: dict[str, str], key: str) -> bool:
    return bool(parse_bool(values.get(key, "0") or "0"))


def saved_sid(url: str) -> Optional[str]:
    try:
        with open(os.path.expanduser(SESSION_FILE)) as f:
            return json.load(f).get(url)
    except (OSError, ValueError, AttributeError):
        return None


def save_sid(url: str, sid: Optional[str]) -> None:
    path = os.path.expanduser(SESSION_FILE)
    try:
        with open(path) as f:
            sessions = json.load(f)
    except (OSError, ValueError):
        sessions = {}
    if not isinstance(sessions, dict):
        sessions = {}
    if sid is None:
        sessions.pop(url, None)
    else:
        sessions[url] = sid
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(sessions, f)
