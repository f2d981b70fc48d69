"""A private PostgreSQL cluster run from Debian's binaries.

Used by the embedded node set-up (a cluster under the checkout's data
directory) and by the test suite (a throw-away cluster in a temporary
directory).  PostgreSQL refuses to run as root, so when we are root the
server runs as the ``postgres`` account; the cluster listens on loopback
TCP and on a Unix socket inside its own directory, so it never collides
with a system cluster.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SOCKET_DIR_MAX = 80  # sun_path holds 107 bytes, and "/.s.PGSQL.65535.lock" follows
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ClusterError(Exception):
    """The cluster could not be created, started or reached."""


def find_bindir() -> str:
    """The newest Debian PostgreSQL bin directory."""
    candidates = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        raise ClusterError("PostgreSQL server binaries not found: apt-get install postgresql")
    return candidates[-1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@dataclass
class LocalCluster:
    """One PostgreSQL cluster: data in ``<root>/pgdata``, socket in ``<root>/run``."""

    root: str
    port: int
    host: str = "127.0.0.1"
    superuser: str = "postgres"

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "pgdata")

    @property
    def socket_dir(self) -> str:
        """``<root>/run``, or a short private path when that is too long for a socket."""
        natural = os.path.join(self.root, "run")
        if len(natural) <= SOCKET_DIR_MAX:
            return natural
        digest = hashlib.sha256(os.path.abspath(self.root).encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"qvd-pg-{digest}")

    @property
    def logfile(self) -> str:
        return os.path.join(self.root, "postgresql.log")

    def _owner(self) -> Optional[pwd.struct_passwd]:
        """The account the server runs as (None: ourselves, when not root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError("running as root needs the 'postgres' account") from None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        owner = self._owner()
        cmd = list(argv)
        if owner is not None:
            cmd = ["runuser", "-u", owner.pw_name, "--"] + cmd
        result = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise ClusterError(
                f"{os.path.basename(argv[0])} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def initialized(self) -> bool:
        return os.path.exists(os.path.join(self.datadir, "PG_VERSION"))

    def _prepare_dirs(self) -> None:
        owner = self._owner()
        for path in (self.root, self.socket_dir):
            os.makedirs(path, exist_ok=True)
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            os.chmod(path, 0o700)

    def init(self) -> None:
        """Create the cluster directory (idempotent)."""
        self._prepare_dirs()
        if self.initialized():
            return
        bindir = find_bindir()
        self._run(
            os.path.join(bindir, "initdb"), "-D", self.datadir, "-U", self.superuser,
            "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as hba:
            # Socket: the superuser only, for administration; TCP: passwords.
            hba.write(
                f"local all {self.superuser} trust\n"
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                "host all all ::1/128 scram-sha-256\n"
            )

    def running(self) -> bool:
        bindir = find_bindir()
        result = self._run(os.path.join(bindir, "pg_ctl"), "-D", self.datadir, "status", check=False)
        return result.returncode == 0

    def start(self, timeout: float = 60) -> None:
        if self.running():
            return
        self._prepare_dirs()
        if port_in_use(self.port, self.host):
            raise ClusterError(f"port {self.host}:{self.port} is already in use")
        bindir = find_bindir()
        options = (
            f"-p {self.port} -h {self.host} -k {self.socket_dir} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            if self._is_temporary() else
            f"-p {self.port} -h {self.host} -k {self.socket_dir}"
        )
        self._run(
            os.path.join(bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile,
            "-o", options, "-w", "-t", str(int(timeout)), "start",
        )

    def stop(self, mode: str = "fast") -> None:
        if not self.initialized() or not self.running():
            return
        bindir = find_bindir()
        self._run(os.path.join(bindir, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _is_temporary(self) -> bool:
        return os.path.exists(os.path.join(self.root, "TEMPORARY"))

    def mark_temporary(self) -> None:
        """Trade durability for speed (test clusters)."""
        with open(os.path.join(self.root, "TEMPORARY"), "w") as f:
            f.write("this cluster is disposable\n")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket."""
        bindir = find_bindir()
        result = self._run(
            os.path.join(bindir, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", self.socket_dir, "-p", str(self.port), "-U", self.superuser,
            "-d", database, "-c", sql,
        )
        return result.stdout

    def ensure_role_and_database(self, user: str, password: str, database: str) -> None:
        """Create (or update) a login role owning ``database``."""
        for name in (user, database):
            if not _IDENTIFIER.match(name):
                raise ClusterError(f"{name!r} is not a plain lower-case SQL identifier")
        quoted_pw = password.replace("'", "''")
        self.psql(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{user}') THEN "
            f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{quoted_pw}'; "
            f"ELSE ALTER ROLE \"{user}\" LOGIN PASSWORD '{quoted_pw}'; END IF; END $$;"
        )
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'").strip()
        if not exists:
            self.psql(f'CREATE DATABASE "{database}" OWNER "{user}"')
