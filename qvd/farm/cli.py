"""``qvd-farm``: a farm of QVD nodes on this machine, for tests and demos (as root).

    qvd-farm up N [--desktops K] [--processes P] [--fast] [--combined] [--dir DIR] ...
    qvd-farm down [ID ...]      remove farms whose owner is gone (all such by default)
    qvd-farm list

``up`` prints a JSON summary on one line (``ready {...}``) and a readable
one, then runs until SIGINT or SIGTERM and removes everything it made; if
it dies on the way, its janitor does.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, Optional, Sequence

import psutil

from qvd.config import ConfigError
from qvd.db import DatabaseError
from qvd.farm import janitor
from qvd.farm.farm import Farm, Options
from qvd.farm import FarmError
from qvd.pgcluster import ClusterError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvd-farm", description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start a farm and run it until interrupted")
    up.add_argument("nodes", type=int, help="number of nodes")
    up.add_argument("--desktops", type=int, default=2, metavar="K",
                    help="users user1..userK (passwords pw1..pwK), a VM each (default 2)")
    up.add_argument("--processes", type=int, default=1, metavar="P",
                    help="L7R processes per node (l7r.processes, default 1)")
    up.add_argument("--fast", action="store_true",
                    help="test timers: heartbeat every second, a node lost after 6 s")
    up.add_argument("--dir", help="farm directory (default: a temporary one, removed)")
    up.add_argument("--account", default="qvd",
                    help="vm.process.account (default qvd, created if missing)")
    up.add_argument("--session", default="/usr/bin/xterm",
                    help="the VMs' X session command (command.x-session)")
    up.add_argument("--combined", action="store_true",
                    help="one twistd qvd-node per node (HKD and L7R in one process)")
    down = actions.add_parser("down", help="remove farms whose owner and janitor are gone")
    down.add_argument("ids", nargs="*", help="farm ids (default: every abandoned farm)")
    actions.add_parser("list", help="the farms of this machine")
    return parser


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(summary: dict[str, Any], desktops: list[tuple[str, str, int]]) -> str:
    lines = [f"farm {summary['id']} in {summary['directory']}",
             f"  balancer (haproxy): {summary['balancer']}   CA: {summary['ca']}",
             f"  QVD-DB: {summary['database']}   qa -c {summary['admin_conf']} host get"]
    for name, node in summary["nodes"].items():
        lines.append(f"  {name}: {node['address']} (namespace {node['namespace']},"
                     f" VMs on {node['vm_network']})")
    for login, password, _ in desktops:
        lines.append(f"  qvd-client -h {summary['balancer'].split(':')[0]} --ca {summary['ca']}"
                     f" -u {login} -w {password}")
    lines.append("Ctrl-C (or SIGTERM) stops and removes the farm.")
    return "\n".join(lines)


def up(args: argparse.Namespace) -> int:
    farm = Farm(Options(args.nodes, args.dir, args.processes, args.account, args.session,
                        args.fast, combined=args.combined))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set() if farm.nodes else sys.exit(1))
    try:
        farm.up()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        desktops = farm.add_desktops(args.desktops)
        summary = farm.summary()
        print("ready " + json.dumps(summary), flush=True)
        print(describe(summary, desktops), flush=True)
        stop.wait()
    except (FarmError, ClusterError, ConfigError, DatabaseError) as e:
        print(f"qvd-farm: {e}", file=sys.stderr)
        return 1
    finally:
        farm.down()
    print("farm removed", flush=True)
    return 0


def down(ids: list[str]) -> int:
    status = 0
    for farm_id in ids or janitor.known_farms():
        try:
            state = janitor.State.load(farm_id)
        except FileNotFoundError:
            print(f"qvd-farm: no farm {farm_id}", file=sys.stderr)
            status = 1
            continue
        if _alive(state.owner):
            print(f"farm {farm_id} belongs to running process {state.owner}: stop that",
                  file=sys.stderr)
            status = 1
            continue
        janitor.teardown(state)
        print(f"farm {farm_id} removed")
    return status


def list_farms() -> int:
    for farm_id in janitor.known_farms():
        state = janitor.State.load(farm_id)
        owner = "running" if _alive(state.owner) else "abandoned"
        print(f"{farm_id}  {state.plan.nodes} nodes  {state.plan.gateway}  {state.directory}"
              f"  owner {state.owner} ({owner})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.action == "up":
        sys.exit(up(args))
    sys.exit(down(args.ids) if args.action == "down" else list_farms())


if __name__ == "__main__":
    main()
