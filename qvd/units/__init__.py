"""``qvd-units install``: the node's systemd units and logrotate file, for this installation.

The templates beside this module name what only the installation knows: this
virtualenv's ``twistd``, the node.conf the daemons read, the directories the
hardened units may write (``path.run``, ``path.log``, the log file's directory,
the DI storage for the API) and the log files logrotate rotates.  ``install``
writes them (by default to ``/etc/systemd/system`` and ``/etc/logrotate.d``)
and has systemd reload its units when it runs; ``systemctl enable --now
qvd-node`` (or ``qvd-l7r`` and ``qvd-hkd`` on their own) is the administrator's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib import resources
from typing import Optional, Sequence

from qvd.config import DEFAULT_PATH, ENV_PATH, Config, ConfigError

UNITS = ("qvd-l7r.service", "qvd-hkd.service", "qvd-node.service", "qvd-vma.service",
         "qvd-api.service")
LOGROTATE = "qvd.logrotate"
UNIT_DIR = "/etc/systemd/system"
LOGROTATE_DIR = "/etc/logrotate.d"


def _writable(*paths: str) -> str:
    """``ReadWritePaths=`` for ``paths``, each optional (``-``: may not exist yet)."""
    unique = sorted({os.path.abspath(p) for p in paths if p.strip()})
    return " ".join(f"-{p}" for p in unique)


def values(config: Config, config_path: str) -> dict[str, str]:
    """What the templates' ``@NAME@`` placeholders stand for."""
    log_file = config.get("log.filename").strip()
    log_dirs = [config.get("path.log")] + (
        [os.path.dirname(log_file)] if log_file not in ("", "-") else [])
    return {
        "TWISTD": os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "twistd"),
        "CONFIG": os.path.abspath(config_path),
        "L7R_WRITABLE": _writable(config.get("path.run"), *log_dirs),
        "API_WRITABLE": _writable(config.get("path.run"), config.get("path.storage.root"),
                                  *log_dirs),
        "LOG_FILES": " ".join(sorted({os.path.join(os.path.abspath(d), "*.log")
                                      for d in log_dirs})),
    }


def render(name: str, substitutions: dict[str, str]) -> str:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    for key, value in substitutions.items():
        text = text.replace(f"@{key}@", value)
    return text


def install(config_path: str, unit_dir: str = UNIT_DIR, logrotate_dir: str = LOGROTATE_DIR,
            reload: bool = True) -> list[str]:
    """Write the units and the logrotate file; the paths written."""
    substitutions = values(Config.load(config_path), config_path)
    written = []
    for directory, names in ((unit_dir, UNITS), (logrotate_dir, (LOGROTATE,))):
        os.makedirs(directory, exist_ok=True)
        for name in names:
            target = os.path.join(directory, "qvd" if name == LOGROTATE else name)
            with open(target, "w", encoding="utf-8") as f:
                f.write(render(name, substitutions))
            os.chmod(target, 0o644)
            written.append(target)
    if reload and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qvd-units", description="Install the systemd units of the QVD daemons"
        " (qvd-l7r, qvd-hkd, qvd-node, qvd-vma, qvd-api) and the logrotate file of their logs.")
    parser.add_argument("action", choices=("install",))
    parser.add_argument("-c", "--config", default=os.environ.get(ENV_PATH, DEFAULT_PATH),
                        help="the node.conf the daemons read (default %(default)s)")
    parser.add_argument("--unit-dir", default=UNIT_DIR, help="default %(default)s")
    parser.add_argument("--logrotate-dir", default=LOGROTATE_DIR, help="default %(default)s")
    parser.add_argument("--no-reload", action="store_true",
                        help="do not run systemctl daemon-reload")
    args = parser.parse_args(argv)
    try:
        written = install(args.config, args.unit_dir, args.logrotate_dir, not args.no_reload)
    except (ConfigError, OSError) as e:
        print(f"qvd-units: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print("start the node with: systemctl enable --now qvd-node"
          " (or qvd-l7r and qvd-hkd; qvd-api for the administration API)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
