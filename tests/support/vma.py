"""VMAs for the tests: each on loopback with its own directory, RPC port and X display,
exactly as the process hypervisor runs several VMAs on one node.  As root the sessions
run as ``nobody`` (the suite must never run them as root, nor create accounts);
otherwise as the user running the tests."""

from __future__ import annotations

import os
import random
import socket
import stat
import subprocess
import sys
from typing import Optional

from twisted.internet import reactor

from qvd.config import Config
from qvd.http.simplerpc import SimpleRPCClient
from qvd.vma.service import VMAService
from qvd.vma.settings import VMASettings
from tests.support.paths import ROOT

SESSION_ACCOUNT = "nobody" if os.geteuid() == 0 else ""
HOOK_SCRIPT = '#!/bin/sh\nprintf "%s\\0" "$@" > "{out}"\nexit {code}\n'
RPC_SCRIPT = """\
import sys
from twisted.internet import reactor
from qvd.http.simplerpc import SimpleRPCClient
result = []
params = [tuple(p.split("=", 1)) for p in sys.argv[4:]]
d = SimpleRPCClient(reactor, sys.argv[1], int(sys.argv[2]), 5).call(sys.argv[3], params)
d.addBoth(result.append).addBoth(lambda _: reactor.stop())
reactor.run()
print(result[0])
"""


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


def rpc_in(prefix: list[str], address: str, port: int, method: str, *params: str) -> str:
    """What a SimpleRPC call (``name=value`` params) to a VMA printed, made by a child run
    with ``prefix`` (``nsenter`` into the network namespace the VMA is reached from).
    Blocking: call it in a thread."""
    done = subprocess.run(prefix + [sys.executable, "-c", RPC_SCRIPT, address, str(port), method,
                                    *params], capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    return done.stdout.strip()
