"""Real components for the VMA tests: VMAs on loopback, Xvfb, nxproxy, hooks.

Each VMA gets its own directory, RPC port and X display, exactly as the
process hypervisor runs several VMAs on one node.  As root the sessions run
as ``nobody`` (the suite must never run them as root, nor create accounts);
otherwise as the user running the tests.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import stat
import tempfile
from typing import Any, Callable, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol

from qvd.config import Config
from qvd.http.simplerpc import SimpleRPCClient
from qvd.vma.service import VMAService
from qvd.vma.settings import VMASettings
from tests.support import waiting

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SESSION_ACCOUNT = "nobody" if os.geteuid() == 0 else ""
HOOK_SCRIPT = '#!/bin/sh\nprintf "%s\\0" "$@" > "{out}"\nexit {code}\n'


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_display() -> int:
    """An X display whose lock, socket, X port and NX port are all unused."""
    for _ in range(200):
        n = random.randint(200, 899)
        if (
            not os.path.exists(f"/tmp/.X{n}-lock")
            and not os.path.exists(f"/tmp/.X11-unix/X{n}")
            and _port_free(4000 + n)
            and _port_free(6000 + n)
        ):
            return n
    raise RuntimeError("no free X display")


def scratch_dir(testcase) -> str:
    """A directory the session account can traverse (mkdtemp makes 0700 ones),
    removed when the test's other cleanups (services, processes) are done."""
    path = tempfile.mkdtemp(prefix="qvd-vma-test-")
    os.chmod(path, 0o755)
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def make_settings(directory: str, **overrides: str) -> VMASettings:
    values = {
        "path.run": f"{directory}/run",
        "path.log": f"{directory}/log",
        "internal.vm.port.vma": "0",
        "vma.address": "127.0.0.1",
        "vma.nxagent.loopback": "1",
        "internal.nxagent.display": str(free_display()),
        "command.x-session": "/usr/bin/xclock",
        "vma.user.provisioning": "0",
        "vma.user.account": SESSION_ACCOUNT,
        "vma.user.account.home": f"{directory}/home",
        "vma.poweroff.command": "/bin/true",
    }
    values.update(overrides)
    return VMASettings.from_config(Config(values))


def write_hook(directory: str, name: str, code: int = 0) -> str:
    """A hook that records its argv (NUL-separated) in ``<name>.argv``."""
    path = os.path.join(directory, f"{name}.sh")
    with open(path, "w") as f:
        f.write(HOOK_SCRIPT.format(out=os.path.join(directory, f"{name}.argv"), code=code))
    os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def hook_argv(directory: str, name: str) -> Optional[list[str]]:
    try:
        with open(os.path.join(directory, f"{name}.argv")) as f:
            return f.read().split("\0")[:-1]
    except FileNotFoundError:
        return None


def start_vma(testcase, settings: VMASettings) -> tuple[VMAService, SimpleRPCClient]:
    """A started VMA service (stopped again at cleanup) and a client for it."""
    service = VMAService(settings, reactor)
    service.startService()
    testcase.addCleanup(service.stopService)
    rpc = SimpleRPCClient(reactor, "127.0.0.1", service.port.getHost().port, timeout=10)
    return service, rpc


def poll(call: Callable[[], Deferred], until: Callable[[Any], bool],
         timeout: float = 20.0) -> Deferred:
    """Calls ``call`` every 0.1 s until its result satisfies ``until`` (bounded)."""
    return waiting.poll(call, until, timeout, "RPC result", interval=0.1)


class _Child(ProcessProtocol):
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
        self.protocol = _Child()
        fds = {0: "w" if stdin is None else stdin, 1: "r", 2: "r", **({3: "r"} if fd3 else {})}
        self.process = reactor.spawnProcess(self.protocol, argv[0], argv, env=env, childFDs=fds)
        testcase.addCleanup(self.stop)

    def stop(self) -> Deferred:
        if not self.protocol.ended.called:
            self.process.signalProcess(self.stop_signal)
        return self.protocol.ended


@inlineCallbacks
def start_xvfb(testcase):
    """Xvfb on a display it picks itself; fires with ``:<n>`` once it is ready."""
    argv = ["/usr/bin/Xvfb", "-displayfd", "3", "-nolisten", "tcp"]
    xvfb = Child(testcase, argv, {}, fd3=True, stop_signal="TERM")  # TERM: it removes its lock
    number = yield xvfb.protocol.fd3
    return ":" + number.decode().strip()


def start_nxproxy(testcase, x_display: str, nx_display: int) -> Child:
    """The client side of NX (reference §5.4): ``nxproxy -S localhost:<nx display>``.
    Stopping it KILLs it, as a lost client link would."""
    home = scratch_dir(testcase)
    env = {"DISPLAY": x_display, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
    return Child(testcase, ["/usr/bin/nxproxy", "-S", f"localhost:{nx_display}"], env)


TRANSCRIPT = re.compile(r"^```transcript ([\w-]+)( close)?\n(.*?)^```", re.M | re.S)
_ESCAPE = re.compile(r"\\(r|n|\\)")


def _unescape(text: str) -> bytes:
    return _ESCAPE.sub(lambda m: {"r": "\r", "n": "\n", "\\": "\\"}[m.group(1)], text).encode()


def transcripts(name: str = "simplerpc.md") -> dict[str, tuple[bytes, bytes, bool]]:
    """``{name: (client bytes, server bytes, server closes)}`` from a protocols/ file."""
    with open(os.path.join(ROOT, "protocols", name)) as f:
        text = f.read()
    result = {}
    for match in TRANSCRIPT.finditer(text):
        sent, expected = b"", b""
        for line in match.group(3).splitlines():
            side, _, data = line.partition(": ")
            if side == "C":
                sent += _unescape(data)
            elif side == "S":
                expected += _unescape(data)
            else:
                raise ValueError(f"bad transcript line {line!r}")
        result[match.group(1)] = (sent, expected, bool(match.group(2)))
    return result
