"""VM start time and memory per hypervisor, and LXC desktops per node.

    .venv/bin/python bench/vm_start.py [--runs 3] [--kvm-runs 1] [--desktops 20]

For ``process`` (the yardstick: no virtualisation at all), ``lxc`` and ``kvm`` in one
run, each through a real ``twistd qvd-hkd``: the time from ``qa vm start`` to the VM's
VMA answering ``x_state`` at the VM's address, and the resident memory of the idle VM
(process: the VMA's process tree; lxc: every process of the container; kvm: QEMU).
Then LXC desktops, each with an nxagent session started by ``x_start`` and left idle
(listening), are added one at a time while the node keeps ``--reserve`` GiB available,
up to ``--desktops`` (bounded: it stops by itself); the memory each costs tells how
many a 24 GiB node holds.  The DIs are ``qvd-di``'s (the test suite's cache); the
private libvirtd, network namespace and PostgreSQL are started here and removed after.
Needs root.  Prints Markdown rows for RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

import psutil

from connect_rate import sql
from db_roundtrip import start_cluster
from harness import ROOT

from qvd.admin.cli import main as qa_main
from qvd.config import Config, parse_properties
from qvd.db import connect_sync
from qvd.db.deploy import deploy
from tests.support import images
from tests.support.libvirtd import PrivateLibvirtd
from tests.support.vma import rpc_in

TWISTD = "from twisted.scripts.twistd import run; run()"
NETWORK = """\
vm.network.ip.start = 10.82.0.100
vm.network.netmask = 255.255.0.0
vm.network.gateway = 10.82.0.1
vm.network.bridge = qvdbenchbr
vm.network.dns_server = 10.82.0.1
"""
FAST = """\
internal.hkd.agent.vm_command_handler.delay = 1
internal.hkd.agent.ticker.delay = 5
internal.hkd.vmhandler.vma_monitor.delay.after.error = 0.3
internal.hkd.vmhandler.vma.failed.max_count.on.starting = 5000
internal.hkd.vmhandler.vma.failed.max_time.on.starting = 600
internal.hkd.libvirt.check.delay = 1
internal.hkd.agent.rpc.timeout = 2
vm.process.account = nobody
"""


class Bench:
    def __init__(self, base: str):
        self.base = base
        self.cluster, conf = start_cluster()
        with open(conf) as f:
            self.db_conf = f.read().replace("database.host = 127.0.0.1",
                                            f"database.host = {self.cluster.socket_dir}")
        self.libvirtd = PrivateLibvirtd(os.path.join(base, "libvirt"),
                                        os.path.join(base, "storage"), f"qvdb{os.getpid()}")
        self.libvirtd.start()
        self.conf = self.write_conf("qa", NETWORK)  # qa gives VMs addresses of this network
        with open(self.conf) as f:
            conn = connect_sync(Config(parse_properties(f.read())))
        deploy(conn)
        conn.close()
        self.qa("host new name=bench-node,address=127.0.0.1")
        self.qa("user new login=alice,password=s3cret")
        self.hkd: Optional[subprocess.Popen] = None
        self.hkd_log = ""

    def write_conf(self, hypervisor: str, extra: str) -> str:
        path = os.path.join(self.base, f"{hypervisor}.conf")
        uri = "" if hypervisor in ("process", "qa") else (
            f"vm.libvirt.uri.{hypervisor} = "
            f"{self.libvirtd.uri('lxc' if hypervisor == 'lxc' else 'qemu')}\n{NETWORK}")
        with open(path, "w") as f:
            f.write(f"{self.db_conf}nodename = bench-node\nvm.hypervisor = {hypervisor}\n{uri}"
                    f"path.run = {self.base}/run\npath.log = {self.base}/log\n"
                    f"path.storage.root = {self.base}/storage\n{FAST}{extra}")
        return path

    def qa(self, line: str, conf: Optional[str] = None) -> str:
        out, err = io.StringIO(), io.StringIO()
        if qa_main(["-c", conf or self.conf] + shlex.split(line), out, err) != 0:
            raise RuntimeError(f"qa {line}: {err.getvalue().strip()}")
        return out.getvalue()

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        return sql(self.conf, statement, params)

    # -- the HKD -------------------------------------------------------------------------
    def start_hkd(self, hypervisor: str) -> None:
        conf = self.write_conf(hypervisor, "")
        prefix = [] if hypervisor == "process" else self.libvirtd.in_netns()
        self.hkd_log = os.path.join(self.base, f"hkd-{hypervisor}.log")
        log = open(self.hkd_log, "w")
        self.hkd = subprocess.Popen(prefix + [sys.executable, "-c", TWISTD, "-n", "--pidfile=",
                                              "qvd-hkd", "--config", conf],
                                    env=dict(os.environ, PYTHONPATH=ROOT), cwd=self.base,
                                    stdout=log, stderr=subprocess.STDOUT)
        self.wait(lambda: self.sql("SELECT state FROM host_runtimes")[0][0] == "running", 60,
                  f"the {hypervisor} HKD")

    def stop_hkd(self) -> None:
        if self.hkd is not None:
            self.hkd.terminate()
            self.hkd.wait(300)
            self.hkd = None

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or (self.hkd and self.hkd.poll() is not None):
                tail = ""
                if self.hkd_log:
                    with open(self.hkd_log) as f:
                        tail = "".join(f.readlines()[-15:])
                raise RuntimeError(f"{what}: not ready after {timeout} s\n{tail}")
            time.sleep(0.2)

    # -- VMs ----------------------------------------------------------------------------
    def new_vm(self, name: str, osf: str) -> int:
        self.qa(f"vm new name={name},user=alice,osf={osf}")
        return self.sql("SELECT id FROM vms WHERE name = %s", (name,))[0][0]

    def rpc(self, hypervisor: str, vm_id: int, method: str, *params: str) -> str:
        row = self.sql("SELECT vm_address, vm_vma_port FROM vm_runtimes WHERE vm_id = %s",
                       (vm_id,))[0]
        if row[0] is None:
            return ""
        prefix = [] if hypervisor == "process" else self.libvirtd.in_netns()
        return rpc_in(prefix, row[0], row[1], method, *params)

    def start_vm(self, hypervisor: str, vm_id: int, timeout: float) -> float:
        """Seconds from ``qa vm start`` to the VMA answering ``x_state``."""
        started = time.monotonic()
        self.qa(f"vm id={vm_id} start")
        self.wait(lambda: self.rpc(hypervisor, vm_id, "x_state") in ("stopped", "listening"),
                  timeout, f"{hypervisor} VM {vm_id}")
        return time.monotonic() - started

    def stop_vm(self, vm_id: int) -> None:
        self.qa(f"vm id={vm_id} stop")
        self.wait(lambda: self.sql("SELECT vm_state FROM vm_runtimes WHERE vm_id = %s",
                                   (vm_id,))[0][0] == "stopped", 300, f"VM {vm_id} stopped")

    def rss(self, hypervisor: str, vm_id: int) -> int:
        """Resident bytes of the VM: its processes (PSS would share libraries; RSS is the
        conservative figure)."""
        pid = self.sql("SELECT vm_pid FROM vm_runtimes WHERE vm_id = %s", (vm_id,))[0][0]
        root = psutil.Process(pid)
        tree = [root] + root.children(recursive=True)
        if hypervisor == "kvm":
            tree = [root]
        return sum(p.memory_info().rss for p in tree if p.is_running())

    def close(self) -> None:
        self.stop_hkd()
        self.libvirtd.stop()
        self.cluster.stop()
        self.cluster.destroy()


def measure_starts(bench: Bench, hypervisor: str, image: str, runs: int, osf: str,
                   timeout: float) -> tuple[list[float], int]:
    bench.qa(f"osf new name={hypervisor},{osf}")
    bench.qa(f"di new disk_image={image},osf={hypervisor}")
    vm_id = bench.new_vm(f"{hypervisor}-0", hypervisor)
    bench.start_hkd(hypervisor)
    times, rss = [], 0
    try:
        for _ in range(runs):
            times.append(bench.start_vm(hypervisor, vm_id, timeout))
            time.sleep(5)  # idle: let the boot settle before reading its memory
            rss = bench.rss(hypervisor, vm_id)
            bench.stop_vm(vm_id)
    finally:
        bench.stop_hkd()
    return times, rss


def lxc_desktops(bench: Bench, limit: int, reserve_gib: float
                 ) -> tuple[list[int], list[float], float, str]:
    """LXC VMs with an idle nxagent session each, added until ``limit``, the memory
    reserve, or a desktop that does not come up within its time: (RSS per desktop,
    seconds per start, node memory per desktop, why it stopped)."""
    bench.start_hkd("lxc")
    before = psutil.virtual_memory().available
    per_vm: list[int] = []
    seconds: list[float] = []
    why = f"the limit of {limit}"
    try:
        for i in range(limit):
            if psutil.virtual_memory().available < reserve_gib * 1024 ** 3:
                why = f"{reserve_gib} GiB left"
                break
            vm_id = bench.new_vm(f"desktop-{i}", "lxc")
            started = time.monotonic()
            try:
                bench.start_vm("lxc", vm_id, 120)
                bench.rpc("lxc", vm_id, "x_start", "qvd.vm.user.name=alice")
                bench.wait(lambda: bench.rpc("lxc", vm_id, "x_state") == "listening", 60,
                           f"nxagent of VM {vm_id}")
            except RuntimeError as e:
                why = f"desktop {i + 1} not up in time ({str(e).splitlines()[0]})"
                break
            seconds.append(time.monotonic() - started)
            per_vm.append(bench.rss("lxc", vm_id))
        time.sleep(5)
        used = before - psutil.virtual_memory().available
    finally:
        bench.stop_hkd()
    return per_vm, seconds, used / max(1, len(per_vm)), why


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kvm-runs", type=int, default=1)
    parser.add_argument("--desktops", type=int, default=20)
    parser.add_argument("--reserve", type=float, default=4.0, help="GiB kept available")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("vm_start.py needs root (libvirtd, network namespaces, mounts)")
    lxc_image, kvm_image = images.image("lxc"), images.image("kvm")
    process_image = os.path.join(tempfile.mkdtemp(), "process.tar")
    with open(process_image, "wb") as f:
        f.write(b"the process hypervisor does not unpack its DI")
    base = tempfile.mkdtemp(prefix="qvd-bench-vm-")
    os.chmod(base, 0o755)
    bench = Bench(base)
    try:
        rows = []
        for hypervisor, image, runs, osf, timeout in (
                ("process", process_image, options.runs, "memory=512", 60),
                ("lxc", lxc_image, options.runs, "memory=512,user_storage=64", 120),
                ("kvm", kvm_image, options.kvm_runs, "memory=768,user_storage=64", 600)):
            if not runs:
                continue
            times, rss = measure_starts(bench, hypervisor, image, runs, osf, timeout)
            rows.append(f"| {hypervisor} | {len(times)} | {statistics.median(times):.1f} |"
                        f" {min(times):.1f} | {max(times):.1f} | {rss / 1024 ** 2:.0f} |")
        per_vm, seconds, cost, why = lxc_desktops(bench, options.desktops, options.reserve)
    finally:
        bench.close()
        shutil.rmtree(base, True)
    total = psutil.virtual_memory().total
    print("| hypervisor | starts | median s | min s | max s | idle VM RSS MiB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| LXC desktops up | stopped by | start s (first, last) | RSS per desktop MiB"
          " (median) | node memory per desktop MiB | desktops in this node's memory"
          " (less 4 GiB) |")
    print("|---|---|---|---|---|---|")
    if per_vm:
        print(f"| {len(per_vm)} | {why} | {seconds[0]:.1f}, {seconds[-1]:.1f} |"
              f" {statistics.median(per_vm) / 1024 ** 2:.0f} | {cost / 1024 ** 2:.0f} |"
              f" {int((total - 4 * 1024 ** 3) / cost)} |")


if __name__ == "__main__":
    main()
