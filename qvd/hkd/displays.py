"""X displays and TCP ports for VMAs that share the node's network (process VMs).

nxagent on display N listens on NX port 4000 + N and X port 6000 + N (and on the
channels' ports, ``CHANNEL_PORTS``), and leaves
``/tmp/.X<N>-lock`` and ``/tmp/.X11-unix/X<N>``; a display is free when none of
them is taken.  Probing binds sockets and stats files: call these in a thread.
"""

from __future__ import annotations

import os
import socket
from typing import Optional

from qvd.hkd.hypervisor import LaunchError

X_LOCK = "/tmp/.X{}-lock"
X_SOCKET = "/tmp/.X11-unix/X{}"
# ports of display n: NX 4000+n, X 6000+n, and nxagent's CUPS, sound and slave channels
CHANNEL_PORTS = (4000, 6000, 2000, 7000, 11000)


def nx_port(display: int) -> int:
    return 4000 + display


def bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def choose(vm_id: int, address: Optional[str], taken: set[int], base: int, span: int) -> int:
    """A free X display, first trying one derived from the (cluster-unique) VM id.

    Its ports (``CHANNEL_PORTS``) are probed on ``address`` (None: the VM has its own
    network namespace, only the X lock files are shared).
    """
    for i in range(span):
        n = base + (vm_id + i) % span
        if (n not in taken and not os.path.exists(X_LOCK.format(n))
                and not os.path.exists(X_SOCKET.format(n))
                and (address is None
                     or all(bindable(address, offset + n) for offset in CHANNEL_PORTS))):
            return n
    raise LaunchError(f"no free X display between {base} and {base + span - 1}")
