"""Run a helper program (hook, useradd...) with its output appended to a log.

The child gets ``/dev/null`` as stdin and the log file itself as stdout and
stderr, so its output never passes through the reactor.
"""

from __future__ import annotations

import os
import time
from typing import Optional, Sequence

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure


class _ExitCode(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred = Deferred()

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        if isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else 128 + (value.signal or 0)
        else:
            code = 0
        self.ended.callback(code)


def stamp() -> str:
    """The timestamp that starts our own lines in the hooks and nxagent logs."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def log_line(log_path: str, text: str) -> None:
    """Append one timestamped line (small, synchronous: it is a local file)."""
    with open(log_path, "a") as f:
        f.write(f"{stamp()} {text}\n")


def run(
    reactor: interfaces.IReactorProcess,
    argv: Sequence[str],
    log_path: str,
    env: Optional[dict[str, str]] = None,
) -> Deferred:
    """Fires with the exit status (128+signal if killed); fails if it cannot start.

    Without ``env`` the child inherits the VMA's environment, as in QVD 4.
    """
    log_line(log_path, "running " + " ".join(argv))
    watcher = _ExitCode()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        reactor.spawnProcess(
            watcher,
            argv[0],
            list(argv),
            env=env if env is not None else dict(os.environ),
            childFDs={0: null_fd, 1: log_fd, 2: log_fd},
        )
    except OSError as e:
        return fail(e)
    finally:
        os.close(log_fd)
        os.close(null_fd)
    return watcher.ended
