"""Programs run inside a desktop session of a ``process`` VM, as its user would run them.

A session process (xclock) gives the account and the environment
(``PULSE_SERVER``, ``CUPS_SERVER``, ``HOME``...) the VMA set up; commands
run with exactly those, so a test sees what a program of the desktop sees.
Also: FUSE for unprivileged sessions, and no mount left behind by a test.
"""

from __future__ import annotations

import os
import stat
import subprocess
from typing import Optional

from twisted.internet import threads
from twisted.internet.defer import Deferred

FUSE = "/dev/fuse"


def session_identity(pid: int) -> tuple[int, int, dict[str, str]]:
    """(uid, gid, environment) of a session process."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    env = {k.decode(): v.decode("utf-8", "replace") for k, v in pairs}
    st = os.stat(f"/proc/{pid}")
    return st.st_uid, st.st_gid, env


def run_in_session(pid: int, argv: list[str], timeout: float = 30,
                   stdin: Optional[bytes] = None) -> Deferred:
    """``argv`` as the session of ``pid``'s user (a thread); fires with CompletedProcess."""
    uid, gid, env = session_identity(pid)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=env, cwd=env.get("HOME", "/"), input=stdin,
                              capture_output=True, timeout=timeout,
                              **({"user": uid, "group": gid} if os.geteuid() == 0 else {}))

    return threads.deferToThread(run)


def fuse_for_sessions() -> None:
    """sshfs run by an unprivileged session needs /dev/fuse read-write for all (mode
    0666, what Debian's udev rule sets; some containers create it 0600)."""
    mode = os.stat(FUSE).st_mode
    if os.geteuid() == 0 and mode & 0o666 != 0o666:
        os.chmod(FUSE, stat.S_IMODE(mode) | 0o666)


def mounts_under(root: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if p == root or p.startswith(root.rstrip("/") + "/")]


def unmount_all(root: str) -> None:
    """Lazily unmount whatever a failed test left mounted under ``root``."""
    for point in reversed(mounts_under(root)):
        subprocess.run(["umount", "-l", point], capture_output=True)
