"""External commands the HKD runs (``qemu-img``, ``tar``, ``mount``, ``iptables``...):
child processes watched by the reactor, never waited for in its thread, each killed
when it outlives its timeout (QVD 4 killed commands that outlived their state).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from twisted.internet import defer, protocol
from twisted.internet.error import ProcessExitedAlready
from twisted.python.failure import Failure

from qvd.hkd.hypervisor import LaunchError

# What a failing command's message quotes of its output.
QUOTED = 400


class CommandError(Exception):
    """A command failed or timed out; the message names it and quotes its error output."""


@dataclass(frozen=True)
class Result:
    out: bytes
    err: bytes
    code: Optional[int]  # None: killed by a signal


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred[Result]):
        self.done = done
        self.out: list[bytes] = []
        self.err: list[bytes] = []

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        self.done.callback(Result(b"".join(self.out), b"".join(self.err),
                                  getattr(reason.value, "exitCode", None)))


def run(reactor: Any, argv: Sequence[str], timeout: float = 300.0,
        env: Optional[dict[str, str]] = None) -> defer.Deferred[Result]:
    """Run ``argv``; its result, or ``CommandError`` if it cannot start or times out."""
    done: defer.Deferred[Result] = defer.Deferred()
    collect = _Collect(done)
    try:
        transport = reactor.spawnProcess(collect, argv[0], list(argv),
                                         env=dict(os.environ) if env is None else env)
    except OSError as e:
        return defer.fail(CommandError(f"cannot run {argv[0]}: {e.strerror}"))

    def kill() -> None:
        try:
            transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, kill)

    def ended(result: Result) -> Result:
        if timer.active():
            timer.cancel()
            return result
        raise CommandError(f"{' '.join(argv)} did not finish within {timeout:g} s")

    return done.addCallback(ended)


@defer.inlineCallbacks
def check(reactor: Any, argv: Sequence[str], timeout: float = 300.0,
          env: Optional[dict[str, str]] = None) -> Any:
    """Run ``argv``; its standard output, or ``CommandError`` unless it exits with 0."""
    result = yield run(reactor, argv, timeout, env)
    if result.code != 0:
        why = result.err.decode("utf-8", "replace").strip()[-QUOTED:] or f"status {result.code}"
        raise CommandError(f"{' '.join(argv)} failed: {why}")
    return result.out


def blocking(argv: Sequence[str], what: str, timeout: float) -> str:
    """Run ``argv`` in this (non-reactor) thread; its output, or ``LaunchError`` saying
    what failed (storage preparation runs whole in a thread)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{what}: {argv[0]} took more than {timeout:g} s") from None
    except OSError as e:
        raise LaunchError(f"{what}: cannot run {argv[0]}: {e.strerror}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[-QUOTED:]
        raise LaunchError(f"{what} failed: {why or f'status {done.returncode}'}")
    return done.stdout.decode("utf-8", "replace")
