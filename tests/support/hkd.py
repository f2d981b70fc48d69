"""Real HKDs for the tests: ``twistd -n qvd-hkd`` processes on a test QVD-DB.

Timers are shortened so the whole lifecycle takes seconds; the VMs are real
``qvd-vma`` processes (no X session is started, so no nxagent is needed).
As root the sessions would run as ``nobody``: the suite never creates accounts.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Sequence

import psutil
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from qvd.http.simplerpc import SimpleRPCClient
from tests.support.admin import qa, qa_refused
from tests.support.postgres import TestDatabase, drop_database, new_database
from tests.support.processes import Twistd
from tests.support.waiting import poll_blocking

TIMERS = """\
internal.hkd.agent.ticker.delay = 0.5
internal.hkd.agent.ticker.timeout = 20
internal.hkd.agent.command_handler.delay = 1
internal.hkd.agent.vm_command_handler.delay = 1
internal.hkd.agent.expiration_monitor.delay = 0.5
internal.hkd.agent.cluster_monitor.delay = 0.5
internal.hkd.agent.cluster_monitor.fuzzy_delay = 0
internal.hkd.cluster.node.timeout = 5
internal.hkd.agent.rpc.timeout = 2
internal.hkd.agent.rpc.retry.count = 1
internal.hkd.agent.rpc.retry.delay = 0.2
internal.hkd.vmhandler.vma_monitor.delay.after.ok = 0.5
internal.hkd.vmhandler.vma_monitor.delay.after.error = 0.3
internal.hkd.vmhandler.vma.failed.max_count.on.starting = 100
internal.hkd.vmhandler.vma.failed.max_time.on.starting = 30
internal.hkd.vmhandler.vma.failed.max_count.on.running = 2
internal.hkd.vmhandler.vma.failed.max_time.on.running = 0.5
internal.hkd.process.check.delay = 0.3
internal.hkd.process.timeout.on_state.stopping.shutdown.waiting_for_process = 5
internal.hkd.process.timeout.on_state.stopping.stop.waiting_for_process = 3
internal.hkd.stopping.vms.timeout = 20
"""


class HKDTestCase(unittest.TestCase):
    """A QVD-DB with one host, OSF, DI and user, and helpers to run HKDs on it."""

    timeout = 120

    def setUp(self) -> None:
        self.db: TestDatabase = new_database()
        self.addCleanup(drop_database, self.db)
        self.root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(self.root, "storage", "staging"))
        os.chmod(self.root, 0o755)
        self.admin_conf = self.db.write_conf(self.root, self.node_extra(self.root))
        image = os.path.join(self.root, "storage", "staging", "desk.tar.gz")
        with open(image, "wb") as f:
            f.write(b"a DI the process hypervisor does not unpack")
        self.qa("osf new name=desk")
        self.qa(f"di new disk_image={image},osf=desk")
        self.qa("user new login=alice,password=s3cret")
        self.hkds: list[Twistd] = []
        self.addCleanup(self._kill_everything)

    def node_extra(self, root: str, nodename: str = "test-node") -> str:
        account = "vm.process.account = nobody\n" if os.geteuid() == 0 else ""
        return (f"nodename = {nodename}\nvm.hypervisor = process\npath.run = {root}/run\n"
                f"path.log = {root}/log\npath.storage.root = {root}/storage\n"
                f"{account}{TIMERS}")

    def qa(self, line: str) -> str:
        return qa(self.admin_conf, line)

    def qa_fails(self, line: str) -> str:
        return qa_refused(self.admin_conf, line)

    def new_vm(self, name: str) -> int:
        self.qa(f"vm new name={name},user=alice,osf=desk")
        return self.db.query("SELECT id FROM vms WHERE name = %s", (name,))[0][0]

    @inlineCallbacks
    def running_vms(self, *names: str):
        """New VMs named ``names``, all started with ``qa`` before any is waited for;
        (id, row once running) of each, in order."""
        vm_ids = [self.new_vm(name) for name in names]
        for vm_id in vm_ids:
            self.qa(f"vm id={vm_id} start")
        running = []
        for vm_id in vm_ids:
            running.append((vm_id, (yield self.wait_vm(vm_id, "running"))))
        return running

    def host(self, name: str = "test-node", address: str = "127.0.0.1",
             extra: str = "") -> tuple[int, str]:
        """A host row and a node.conf (own storage) for an HKD serving it."""
        self.qa(f"host new name={name},address={address}")
        host_id = self.db.query("SELECT id FROM hosts WHERE name = %s", (name,))[0][0]
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        conf = self.db.write_conf(directory, self.node_extra(directory, name) + extra)
        return host_id, conf

    @inlineCallbacks
    def start_hkd(self, conf: str, host_id: int, wrapper: Sequence[str] = ()):
        """An HKD process (its argv after ``wrapper``), once its host is ``running``."""
        hkd = Twistd("qvd-hkd", conf, os.path.dirname(conf), wrapper)
        self.hkds.append(hkd)
        hkd.start()
        yield self.wait_host(host_id, "running")
        return hkd

    @inlineCallbacks
    def _kill_everything(self):
        for hkd in self.hkds:
            if hkd.running:
                yield hkd.kill("KILL")
        yield threads.deferToThread(kill_vmas, self.root)

    # -- observations ------------------------------------------------------------------------
    def wait_host(self, host_id: int, state: str, timeout: float = 30.0) -> Deferred:
        return self.poll(lambda: self.host_state(host_id), lambda s: s == state, timeout,
                         f"host {host_id} state")

    def host_state(self, host_id: int) -> str:
        return self.db.query("SELECT state FROM host_runtimes WHERE host_id = %s", (host_id,))[0][0]

    def vm_row(self, vm_id: int) -> dict[str, Any]:
        columns = ("vm_state", "host_id", "vm_address", "vm_vma_port", "vm_x_port", "vm_pid",
                   "vm_cmd", "vm_state_ts")
        row = self.db.query(f"SELECT {', '.join(columns)} FROM vm_runtimes WHERE vm_id = %s",
                            (vm_id,))[0]
        return dict(zip(columns, row))

    def wait_vm(self, vm_id: int, state: str, timeout: float = 40.0) -> Deferred:
        return self.poll(lambda: self.vm_row(vm_id), lambda r: r["vm_state"] == state, timeout,
                         f"vm {vm_id} state")

    def poll(self, check: Callable[[], Any], until: Callable[[Any], bool], timeout: float,
             what: str) -> Deferred:
        """``poll``, failing with the end of every HKD's log (what a reader needs)."""
        def explain() -> str:
            return "".join(f"\n--- {h.log_path}\n" + "".join(h.output().splitlines(True)[-40:])
                           for h in self.hkds)

        return poll_blocking(check, until, timeout, what, explain)

    def vma_pids(self) -> list[int]:
        """Every qvd-vma process of this test, running or not yet reaped."""
        return [p.pid for p in psutil.process_iter(["cmdline", "status"])
                if is_vma(p, self.root) and p.info["status"] != psutil.STATUS_ZOMBIE]

    def ping(self, row: dict[str, Any]) -> Deferred:
        return SimpleRPCClient(reactor, row["vm_address"], row["vm_vma_port"], 5).call("ping")


def kill_vmas(root: str) -> None:
    """Whatever qvd-vma a test left running under ``root``."""
    for process in psutil.process_iter(["cmdline"]):
        if is_vma(process, root):
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def is_vma(process: psutil.Process, root: str) -> bool:
    cmdline = process.info["cmdline"] or []
    return "qvd-vma" in cmdline and any(arg.startswith(root) for arg in cmdline)


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
