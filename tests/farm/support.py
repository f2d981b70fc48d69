"""A real farm for a test: ``qvd.farm.Farm`` (namespaces, a bridge, PostgreSQL, haproxy,
``twistd qvd-hkd`` and ``qvd-l7r`` per node, process VMs with nxagent running ``xclock``),
an Xvfb for the clients' nxproxy, and real NX sessions (``qvd.farm.sessions``).

The farm's blocking methods run in threads; waits are bounded polls on rows, answers or
haproxy's view.  Needs root, iproute2, nsenter and haproxy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Iterable, Optional

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial import unittest

from qvd.farm.farm import Farm, Node, Options
from qvd.farm.sessions import Desktop, settings_for, x_state
from tests.support.x11 import start_xvfb
from tests.support import waiting

ROWS = ("vm_state", "host_id", "vm_address", "vm_vma_port", "vm_pid", "user_state",
        "l7r_host_id", "l7r_pid", "user_cmd")


def every(deferreds: Iterable[Deferred]) -> Deferred:
    """Their results, or the first failure (the others' failures consumed)."""
    return gatherResults(list(deferreds), consumeErrors=True)


def missing_tools() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("/sbin/ip", "/usr/bin/nsenter", "/usr/sbin/haproxy", "/usr/bin/nxagent",
                 "/usr/bin/nxproxy", "/usr/bin/Xvfb"):
        if not os.path.exists(tool):
            return f"needs {tool}"
    return None


class FarmTestCase(unittest.TestCase):
    """A farm of ``nodes`` nodes (fast timers), up before the test and gone after it."""

    nodes = 2
    processes = 1  # l7r.processes
    combined = False  # twistd qvd-node instead of qvd-hkd and qvd-l7r
    extra = ""  # more node.conf lines
    timeout = 240
    skip = missing_tools()

    @inlineCallbacks
    def setUp(self):
        self.farm = Farm(Options(self.nodes, l7r_processes=self.processes, account="nobody",
                                 session="/usr/bin/xclock", fast=True, combined=self.combined,
                                 extra=self.extra))
        self.addCleanup(threads.deferToThread, self.farm.down)
        yield threads.deferToThread(self.farm.up)
        self.display = yield start_xvfb(self, "-ac")
        self.home = tempfile.mkdtemp(prefix="qvd-farm-client-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.desktops: list[Desktop] = []
        self.addCleanup(self._close_desktops)

    # -- sessions ----------------------------------------------------------------------
    def desktop(self, user: tuple[str, str, int], host: Optional[str] = None) -> Desktop:
        """A session of ``user`` (login, password, vm id) through ``host`` (the balancer)."""
        login, password, vm_id = user
        settings = settings_for(host or self.farm.address, self.farm.port, self.farm.cert,
                                login, password)
        desktop = Desktop(reactor, settings, vm_id, self.display, self.home)
        self.desktops.append(desktop)
        return desktop

    @inlineCallbacks
    def connected(self, user: tuple[str, str, int], host: Optional[str] = None):
        """A session that reached its VM's nxagent."""
        desktop = self.desktop(user, host)
        try:
            yield desktop.connect()
        except Exception as e:
            raise AssertionError(f"session of {user[0]} failed: {e}{self.logs()}") from None
        return desktop

    @inlineCallbacks
    def live_sessions(self, count: int):
        """``count`` new users, each connected through the balancer until its VM's X
        session is ``connected``: (users, desktops, vm ids)."""
        users = yield self.users(count)
        desktops = yield every(self.connected(user) for user in users)
        vm_ids = [user[2] for user in users]
        yield every(self.wait_x(vm_id) for vm_id in vm_ids)
        return users, desktops, vm_ids

    @inlineCallbacks
    def session_through_node1_on_node2(self):
        """One new user's session through node1's L7R to a VM the balancer must start on
        node2, since node1 is left with ``backend=0``: (user, desktop)."""
        node1 = self.farm.nodes[0]
        [user] = yield self.users(1)
        self.farm.qa("host name=node1 set backend=0")
        desktop = yield self.connected(user, host=node1.address)
        return user, desktop

    @inlineCallbacks
    def sessions_on_both_processes(self, host: str, tries: int = 12):
        """Sessions through ``host`` (of ``tries`` users at most) until each of its two
        L7R processes splices one; the connections are spread by the kernel's hash."""
        users = yield self.users(tries)
        desktops = []
        for user in users:
            desktops.append((yield self.connected(user, host)))
            holders = {self.row(d.vm_id)["l7r_pid"] for d in desktops}
            if len(holders) == 2:
                return desktops
        self.fail(f"{tries} sessions all went to one L7R process")

    def _close_desktops(self) -> Deferred:
        return every(desktop.close() for desktop in self.desktops)

    def users(self, count: int) -> Deferred:
        return threads.deferToThread(self.farm.add_desktops, count)

    # -- observations --------------------------------------------------------------------
    def row(self, vm_id: int) -> dict[str, Any]:
        values = self.farm.sql(f"SELECT {', '.join(ROWS)} FROM vm_runtimes WHERE vm_id = %s",
                               (vm_id,))[0]
        return dict(zip(ROWS, values))

    def host_state(self, node: Node) -> str:
        return self.farm.sql("SELECT state FROM host_runtimes WHERE host_id = %s",
                             (node.host_id,))[0][0]

    def x_state(self, vm_id: int) -> Deferred:
        row = self.row(vm_id)
        return x_state(reactor, row["vm_address"], row["vm_vma_port"])

    def wait_x(self, vm_id: int, state: str = "connected", timeout: float = 20) -> Deferred:
        """Until the VM's VMA reports its NX session ``state``."""
        return self.poll(lambda: self.x_state(vm_id), lambda s: s == state, timeout,
                         f"VM {vm_id}'s X session {state}", blocking=False)

    def poll(self, check: Callable[[], Any], until: Callable[[Any], bool], timeout: float,
             what: str, blocking: bool = True) -> Deferred:
        """A bounded wait; a failure carries the end of the nodes' logs."""
        wait = waiting.poll_blocking if blocking else waiting.poll
        return wait(check, until, timeout, what, explain=self.logs)

    def logs(self) -> str:
        return "".join(self.farm.explain(node) for node in self.farm.nodes)

    def in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        return threads.deferToThread(f, *args)
