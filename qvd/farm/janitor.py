"""What a farm leaves behind is removed, even when its owner dies without warning.

A farm's state (its plan, directory, PostgreSQL and haproxy) is written to
``/run/qvd-farm/<id>.json`` before anything is built.  The owner then
starts ``python -m qvd.farm.janitor <id>`` in a session of its own, holding
the write end of its standard input: an orderly shutdown writes ``done``
and the janitor leaves; end of file without ``done`` means the owner died
(even by SIGKILL), and the janitor tears the farm down.  ``qvd-farm down``
runs the same ``teardown`` for a farm whose owner and janitor are both gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import psutil

from qvd.farm import child_environment, network
from qvd.farm.network import RUN_DIR, Plan
from qvd.files import unlink
from qvd.hkd.layout import VMFiles
from qvd.hkd.process import end_session, kill_all
from qvd.pgcluster import LocalCluster

DONE = b"done"
KILL_ROUNDS = 50  # processes may fork while they are killed: look again, up to this often


@dataclass
class State:
    """Everything teardown needs to know about one farm."""

    plan: Plan
    directory: str
    owned: bool  # the directory was made for the farm: remove it too
    owner: int
    pg_root: str
    haproxy_pid: Optional[int] = None
    haproxy_config: Optional[str] = None

    @property
    def path(self) -> str:
        return state_path(self.plan.farm_id)

    def save(self) -> None:
        os.makedirs(RUN_DIR, exist_ok=True)
        with open(self.path + ".new", "w") as f:
            json.dump(asdict(self), f)
        os.replace(self.path + ".new", self.path)

    @classmethod
    def load(cls, farm_id: str) -> "State":
        with open(state_path(farm_id)) as f:
            values = json.load(f)
        values["plan"] = Plan(**values["plan"])
        return cls(**values)


def state_path(farm_id: str) -> str:
    return os.path.join(RUN_DIR, f"{farm_id}.json")


def log_path(farm_id: str) -> str:
    return os.path.join(RUN_DIR, f"{farm_id}.janitor.log")


def known_farms() -> list[str]:
    """The ids of the farms with a state file here."""
    try:
        names = os.listdir(RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".json"))


def kill_farm_processes(plan: Plan) -> None:
    """SIGKILL everything in the farm's namespaces (nodes and VMs) until nothing is left."""
    for _ in range(KILL_ROUNDS):
        pids = {pid for ns in network.namespaces() if plan.owns(ns)
                for pid in network.pids_in(ns)}
        if not pids:
            return
        kill_all([p for p in map(_process, pids) if p is not None])


def kill_strays(state: State) -> None:
    """SIGKILL any process still naming the farm's directory (a VM's VMA, xinit or nxagent
    whose namespace lost its name), but not the farm's owner or ourselves."""
    mark = os.path.join(state.directory, "")
    spared = {os.getpid(), state.owner}
    kill_all([p for p in psutil.process_iter(["cmdline"])
              if p.pid not in spared and any(mark in arg for arg in p.info["cmdline"] or [])])


def _process(pid: int) -> Optional[psutil.Process]:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _kill_haproxy(state: State) -> None:
    if state.haproxy_pid is None:
        return
    process = _process(state.haproxy_pid)
    try:
        if process is not None and state.haproxy_config in process.cmdline():
            process.kill()
            process.wait(10)
    except psutil.Error:
        pass


def _end_vms(directory: str) -> None:
    """What is left of the farm's VMs (their sessions, X lock files), by their records."""
    for root, _, files in os.walk(os.path.join(directory, "nodes")):
        state = VMFiles(root).state
        if os.path.basename(state) in files:
            end_session(state)


def teardown(state: State) -> None:
    """Stop and remove everything of the farm; safe to run again."""
    kill_farm_processes(state.plan)
    _kill_haproxy(state)
    if os.path.exists(state.pg_root):
        LocalCluster(root=state.pg_root, port=0).destroy()
    kill_strays(state)
    network.destroy(state.plan)
    _end_vms(state.directory)
    if state.owned:
        shutil.rmtree(state.directory, ignore_errors=True)
    for path in (log_path(state.plan.farm_id), state.path):
        unlink(path)


def start(farm_id: str) -> subprocess.Popen:
    """The janitor of a farm whose state is saved; keep its ``stdin`` open while the farm
    lives, write ``done`` to it after an orderly teardown."""
    with open(log_path(farm_id), "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "qvd.farm.janitor", farm_id],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_environment(),
                                cwd="/")


def main() -> None:
    farm_id = sys.argv[1]
    said = sys.stdin.buffer.read()  # until the owner closes it, or dies
    if said.strip() == DONE:
        return
    started = time.monotonic()
    try:
        state = State.load(farm_id)
    except FileNotFoundError:
        return
    print(f"janitor: the owner of farm {farm_id} (pid {state.owner}) is gone; tearing down",
          flush=True)
    teardown(state)
    print(f"janitor: farm {farm_id} removed in {time.monotonic() - started:.1f}s", flush=True)


if __name__ == "__main__":
    main()
