"""Processes the tests start: twistd daemons on this checkout, and helpers (Xvfb, nxproxy)
that are signalled and reaped at cleanup; ``stop_popen`` for the blocking ``Popen``
children of the fixtures and the bench scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.support.paths import ROOT, TWISTD


def stop_popen(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL once ``timeout`` seconds pass: a child that ignores the
    polite signal must not hang the test's (or the bench's) clean-up."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ProcessOutput(ProcessProtocol):
    """A child's stdout and stderr appended to a file; ``ended`` fires with its exit code."""

    def __init__(self, path: str):
        self.log = open(path, "ab")
        self.ended: Deferred = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    def processEnded(self, reason) -> None:
        self.log.close()
        self.ended.callback(reason.value.exitCode)


class Twistd:
    """One ``twistd -n <plugin> --config <conf>`` process (after ``wrapper``, e.g. an
    ``ip netns exec``), logging to ``<directory>/<plugin>.log``."""

    def __init__(self, plugin: str, conf: str, directory: str, wrapper: Sequence[str] = ()):
        self.plugin = plugin
        self.conf = conf
        self.directory = directory
        self.wrapper = list(wrapper)
        self.log_path = os.path.join(directory, f"{plugin}.log")
        self.protocol: Optional[ProcessOutput] = None
        self.process: Any = None

    def start(self) -> None:
        self.protocol = ProcessOutput(self.log_path)
        argv = self.wrapper + [sys.executable, "-c", TWISTD, "-n", "--pidfile=", self.plugin,
                               "--config", self.conf]
        self.process = reactor.spawnProcess(self.protocol, argv[0], argv,
                                            env=dict(os.environ, PYTHONPATH=ROOT),
                                            path=self.directory)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.protocol is not None and not self.protocol.ended.called

    def kill(self, name: str = "KILL") -> Deferred:
        if self.running:
            self.process.signalProcess(name)
        return self.ended()

    def ended(self) -> Deferred:
        """A new Deferred firing with the exit code once the process has ended."""
        d: Deferred = Deferred()
        assert self.protocol is not None
        self.protocol.ended.addBoth(lambda r: (d.callback(r), r)[1])
        return d

    def output(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()


class _ChildOutput(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred = Deferred()
        self.fd3: Deferred = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 3:
            if not self.fd3.called:
                self.fd3.callback(data)
        else:
            self.output += data

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


class Child:
    """A test-side process (Xvfb, nxproxy) signalled and reaped at cleanup."""

    def __init__(
        self,
        testcase,
        argv: list[str],
        env: dict[str, str],
        fd3: bool = False,
        stop_signal: str = "KILL",
        stdin: Optional[int] = None,
    ):
        self.stop_signal = stop_signal
        self.protocol = _ChildOutput()
        fds = {0: "w" if stdin is None else stdin, 1: "r", 2: "r", **({3: "r"} if fd3 else {})}
        self.process = reactor.spawnProcess(self.protocol, argv[0], argv, env=env, childFDs=fds)
        testcase.addCleanup(self.stop)

    def stop(self) -> Deferred:
        if not self.protocol.ended.called:
            self.process.signalProcess(self.stop_signal)
        return self.protocol.ended
