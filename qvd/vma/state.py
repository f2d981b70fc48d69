"""nxagent session state: raw states, their x_state names, and the state files.

The state file holds one line ``<raw_state>:<unix_ts>`` and the pid file the
nxagent pid, both under ``path.run`` as in QVD 4, written under an exclusive
flock and read under a shared one so outside tools see whole lines.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import Optional

# reference §3.3
X_STATE = {
    "initiating": "starting",
    "provisioning": "provisioning",
    "starting": "listening",
    "resuming": "listening",
    "started": "connected",
    "resumed": "connected",
    "suspending": "suspending",
    "suspended": "suspended",
    "terminating": "stopping",
    "aborting": "stopping",
}

# x_states whose nxagent must be alive, and the timeout key of each x_state
# that must not last forever (``initiating`` applies to ``starting``, which
# QVD 4 meant but never did).
LIVE = frozenset({"listening", "connected", "suspending", "suspended"})
TIMEOUT_KEYS = {
    "starting": "initiating",
    "listening": "listening",
    "suspending": "suspending",
    "stopping": "stopping",
}


def x_state(raw: str) -> str:
    """Unknown and final raw states (terminated, aborted, '') are ``stopped``."""
    return X_STATE.get(raw, "stopped")


@dataclass(frozen=True)
class RawState:
    state: str
    timestamp: float


class StateFiles:
    def __init__(self, state_path: str, pid_path: str):
        self.state_path = state_path
        self.pid_path = pid_path

    def write_state(self, state: str, timestamp: float) -> None:
        _write_locked(self.state_path, f"{state}:{int(timestamp)}")

    def read_state(self) -> RawState:
        text = _read_locked(self.state_path)
        state, _, stamp = text.strip().rpartition(":")
        try:
            return RawState(state, float(stamp))
        except ValueError:
            return RawState("", 0.0)

    def write_pid(self, pid: int) -> None:
        _write_locked(self.pid_path, str(pid))

    def read_pid(self) -> Optional[int]:
        text = _read_locked(self.pid_path).strip()
        return int(text) if text.isdigit() else None

    def delete(self) -> None:
        for path in (self.state_path, self.pid_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _write_locked(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate()
        f.write(text + "\n")


def _read_locked(path: str) -> str:
    try:
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            return f.read()
    except FileNotFoundError:
        return ""
