"""haproxy in front of the farm's L7Rs, configured as docs/farm.md recommends.

TLS passes through (``mode tcp``): the client's TLS session is with the L7R,
whose certificate names the balancer's address too.  Each L7R is checked
with ``GET /qvd/ping`` over TLS, as the manual's ldirectord example does,
and must answer 200 with "I am alive!"; ``inter``/``fall``/``rise`` bound how
long a dead or blocked node keeps getting users.  When every node fails its
check (QVD-DB down: every ping answers 503) the same L7Rs serve as
``backup`` servers, unchecked, so users read the L7R's 503 message rather
than a dropped connection.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
from typing import Optional

from qvd.farm import FarmError

CHECK_INTERVAL = 1.0  # seconds between checks of one server
FALL = 2  # failed checks before a server is taken out
RISE = 1  # good checks before it is used again

CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 4000
defaults
    mode tcp
    option dontlognull
    timeout connect 3s
    timeout check 3s
    # NX sessions are long and may be idle for hours
    timeout client 24h
    timeout server 24h
    option clitcpka
    option srvtcpka
    retries 2
    option redispatch
listen qvd
    bind {address}:{port}
    balance leastconn
    option httpchk
    http-check send meth GET uri /qvd/ping ver HTTP/1.1
    http-check expect string "I am alive!"
    default-server check check-ssl verify none inter {inter}ms fall {fall} rise {rise}
{servers}"""


def config_text(socket_path: str, address: str, port: int,
                servers: list[tuple[str, str, int]]) -> str:
    """The configuration for ``servers`` (name, address, port), each also as a backup."""
    lines = [f"    server {name} {host}:{p} weight 10" for name, host, p in servers]
    lines += [f"    server {name}-fallback {host}:{p} backup no-check"
              for name, host, p in servers]
    return CONFIG.format(socket=socket_path, address=address, port=port,
                         inter=int(CHECK_INTERVAL * 1000), fall=FALL, rise=RISE,
                         servers="\n".join(lines) + "\n")


def binary() -> str:
    path = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise FarmError("haproxy is not installed (apt-get install haproxy)")
    return path


class HAProxy:
    """``haproxy -db`` on the farm's address; ``servers()`` is its view of the L7Rs."""

    def __init__(self, directory: str, address: str, port: int,
                 servers: list[tuple[str, str, int]]):
        os.makedirs(directory, exist_ok=True)
        self.socket = os.path.join(directory, "haproxy.sock")
        self.config = os.path.join(directory, "haproxy.cfg")
        self.log_path = os.path.join(directory, "haproxy.log")
        self.address = address
        self.port = port
        with open(self.config, "w") as f:
            f.write(config_text(self.socket, address, port, servers))
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> int:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([binary(), "-db", "-f", self.config],
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def servers(self) -> dict[str, tuple[str, str]]:
        """{server: (status, last check's code or status)} of the checked servers."""
        if self.process is None or self.process.poll() is not None:
            raise FarmError(f"haproxy is not running: see {self.log_path}")
        return {row["svname"]: (row["status"], row["check_code"] or row["check_status"])
                for row in show_stat(self.socket)
                if row["pxname"] == "qvd" and row["svname"] not in ("FRONTEND", "BACKEND")
                and not row["svname"].endswith("-fallback")}


def show_stat(socket_path: str) -> list[dict[str, str]]:
    """haproxy's ``show stat`` rows from its stats socket (none while it is starting)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(socket_path)
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        return []
    return list(csv.DictReader(data.decode("ascii").lstrip("# ").splitlines()))
