"""``qvd-node reload``: have the running L7R (``twistd qvd-node`` or ``qvd-l7r``) reload
gracefully, as ``systemctl reload`` does (``qvd.l7r.reload``).

    qvd-node [-c node.conf] reload

It finds the daemon's first L7R process through ``l7r.pid_file`` and sends it
SIGHUP; without a running daemon it says so and exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Optional, Sequence

import psutil

from qvd.config import Config, ConfigError
from qvd.l7r.reload import read_pid_file

DAEMONS = ("qvd-node", "qvd-l7r")


class NoDaemon(Exception):
    """No L7R daemon of this node.conf runs; the message says what was found."""


def running_daemon(config: Config) -> int:
    """The pid of the running daemon's first L7R process."""
    path = config.get("l7r.pid_file")
    try:
        pid = read_pid_file(path)
    except (OSError, ValueError) as e:
        raise NoDaemon(f"cannot read {path}: {e}") from None
    if pid is None:
        raise NoDaemon(f"no qvd-node or qvd-l7r daemon runs ({path} does not exist)")
    try:
        command = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        raise NoDaemon(f"no qvd-node or qvd-l7r daemon runs ({path} names pid {pid},"
                       " which is gone)") from None
    if not set(DAEMONS) & set(command):
        raise NoDaemon(f"{path} names pid {pid}, which is not qvd-node or qvd-l7r"
                       f" ({' '.join(command)[:80]})")
    return pid


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qvd-node", description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", default=None,
                        help="node.conf (default $QVD_CONFIG or /etc/qvd/node.conf)")
    parser.add_argument("action", choices=("reload",),
                        help="reload: new L7R processes take the port, the old ones drain")
    args = parser.parse_args(argv)
    try:
        pid = running_daemon(Config.load(args.config))
        os.kill(pid, signal.SIGHUP)
    except (ConfigError, NoDaemon, OSError) as e:
        print(f"qvd-node: {e}", file=sys.stderr)
        return 1
    print(f"qvd-node: asked the L7R (pid {pid}) to reload: new processes take the port,"
          " the current ones finish their sessions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
