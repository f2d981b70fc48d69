"""The checks of ``qvd-doctor``, in the order a support engineer goes through a node.

Each check gives ``Finding``s: ``ok``, a ``problem`` (with the fix), or
``skipped`` when what it needs failed first (no configuration, no QVD-DB).
Everything here blocks: ``qvd-doctor`` is a command, not a daemon.
"""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import socket
import stat
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional

import psutil
from cryptography import x509

from qvd import logs
from qvd.config import DEFAULT_PATH, Config, ConfigError
from qvd.db import SCHEMA_VERSION, SCHEMA_VERSIONS, DatabaseError, connect_sync
from qvd.db.configs import apply_configs_now
from qvd.hkd.hypervisor import check_hypervisor

MANDATORY = ("nodename", "database.host", "database.name", "database.user", "database.password")
EXPIRY_WARNING_DAYS = 30
MAX_CLOCK_SKEW = 2.0  # seconds; heartbeats and session rows compare both clocks
OWN_DAEMONS = ("qvd-l7r", "qvd-node", "qvd-hkd", "qvd-api")
LIBVIRT_URIS = {"kvm": "qemu:///system", "lxc": "lxc:///"}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | problem | skipped
    message: str
    fix: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def problem(check: str, message: str, fix: str) -> Finding:
    return Finding(check, "problem", message, fix)


def skipped(check: str, why: str) -> Finding:
    return Finding(check, "skipped", f"not checked: {why}")


# -- configuration -------------------------------------------------------------------------
def configuration(path: Optional[str]) -> tuple[Optional[Config], list[Finding]]:
    """node.conf parsed, its mandatory keys set and its values usable."""
    try:
        config = Config.load(path)
    except ConfigError as e:
        return None, [problem("configuration", str(e), "fix the line named above in node.conf")]
    where = config.path or "built-in defaults only (no node.conf)"
    missing = [key for key in MANDATORY if not config.get(key, default="").strip()]
    if missing:
        return config, [problem("configuration", f"{where}: {', '.join(missing)} not set",
                                f"set {', '.join(missing)} in"
                                f" {config.path or DEFAULT_PATH}")]
    try:
        for key in ("l7r.port", "l7r.metrics.port", "hkd.metrics.port"):
            config.get_int(key)
        check_hypervisor(config)
        logs.level(config), logs.log_format(config)
    except ConfigError as e:
        return config, [problem("configuration", f"{where}: {e}", "correct it in node.conf")]
    return config, [ok("configuration", f"{where} parses; nodename {config.get('nodename')}")]


# -- QVD-DB --------------------------------------------------------------------------------
def database(config: Config) -> tuple[Any, list[Finding]]:
    """A connection to QVD-DB (None if there is none) and what was found about it."""
    try:
        conn = connect_sync(config, "qvd-doctor")
    except DatabaseError as e:
        return None, [problem(
            "database", str(e),
            "start PostgreSQL on the database host (systemctl start postgresql), or correct"
            " database.host, database.port, database.user and database.password in node.conf")]
    return conn, [ok("database", f"QVD-DB reachable at {config.get('database.host')}")]


def schema(conn: Any) -> list[Finding]:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('versions') IS NOT NULL")
        if not cur.fetchone()[0]:
            found: list[str] = []
        else:
            cur.execute(SCHEMA_VERSIONS)
            found = [row[0] for row in cur.fetchall()]
    if found != [SCHEMA_VERSION]:
        return [problem("schema", f"QVD-DB schema is {', '.join(found) or 'not deployed'},"
                        f" this node needs {SCHEMA_VERSION}",
                        "deploy it with qvd-deploy-db (on an empty database), or upgrade"
                        " QVD-DB to the 4.3.0 schema")]
    return [ok("schema", f"QVD-DB schema {SCHEMA_VERSION}")]


def host_row(conn: Any, config: Config) -> list[Finding]:
    name = config.get("nodename")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT h.id, h.address, r.blocked FROM hosts h LEFT JOIN host_runtimes r"
                    " ON r.host_id = h.id WHERE h.name = %s", (name,))
        row = cur.fetchone()
    if row is None:
        return [problem("host", f"no host named {name!r} (nodename) in QVD-DB",
                        f"qa host new name={name},address=<this node's IP>")]
    host_id, address, blocked = row
    if blocked:
        return [problem("host", f"host {name} (id {host_id}) is blocked: no user can connect",
                        f"qa host name={name} unblock")]
    return [ok("host", f"host {name} (id {host_id}, {address}) registered and not blocked")]


def clock(conn: Any) -> list[Finding]:
    """This machine's clock against QVD-DB's (half the round trip allowed for)."""
    with conn, conn.cursor() as cur:
        before = time.time()
        cur.execute("SELECT extract(epoch FROM clock_timestamp())")
        theirs = float(cur.fetchone()[0])
        after = time.time()
    skew = (before + after) / 2 - theirs
    if abs(skew) > MAX_CLOCK_SKEW:
        return [problem("clock", f"this node's clock is {abs(skew):.1f} s"
                        f" {'ahead of' if skew > 0 else 'behind'} QVD-DB's",
                        "keep every node and the database server on NTP"
                        " (apt-get install chrony)")]
    return [ok("clock", f"clock within {abs(skew):.3f} s of QVD-DB's")]


# -- the L7R's certificate -----------------------------------------------------------------
def certificate(config: Config, now: Optional[datetime.datetime] = None) -> list[Finding]:
    if not config.get_bool("l7r.use_ssl"):
        return [ok("certificate", "l7r.use_ssl = 0: the L7R speaks plain HTTP")]
    findings: list[Finding] = []
    if config.has("l7r.ssl.cert") and config.has("l7r.ssl.key"):
        pem, where = config.get("l7r.ssl.cert").encode("ascii"), "ssl_configs (qa config ssl)"
    else:
        key, cert = config.get("path.l7r.ssl.key"), config.get("path.l7r.ssl.cert")
        findings += _key_file(key)
        try:
            with open(cert, "rb") as f:
                pem, where = f.read(), cert
        except OSError as e:
            return findings + [problem("certificate", f"cannot read {cert}: {e.strerror}",
                                       "install the L7R's certificate there"
                                       " (path.l7r.ssl.cert), or qa config ssl key=...,cert=...")]
    try:
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    except ValueError as e:
        return findings + [problem("certificate", f"{where} is not a PEM certificate: {e}",
                                   "install a PEM certificate")]
    left = expires - (now or datetime.datetime.now(datetime.timezone.utc))
    if left.total_seconds() <= 0:
        findings.append(problem("certificate", f"{where} expired on {expires:%Y-%m-%d}",
                                "renew the L7R's certificate now"))
    elif left.days < EXPIRY_WARNING_DAYS:
        findings.append(problem("certificate", f"{where} expires on {expires:%Y-%m-%d},"
                                f" in {left.days} days", "renew the L7R's certificate"))
    else:
        findings.append(ok("certificate", f"{where} valid until {expires:%Y-%m-%d}"))
    return findings


def _key_file(path: str) -> list[Finding]:
    try:
        info = os.stat(path)
    except OSError as e:
        return [problem("certificate key", f"cannot read {path}: {e.strerror}",
                        "install the L7R's key there (path.l7r.ssl.key)")]
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != 0 or mode & 0o077:
        owner = _user_name(info.st_uid)
        return [problem("certificate key", f"{path} is owned by {owner} with mode {mode:04o}:"
                        " others can read the L7R's private key",
                        f"chown root:root {path} && chmod 600 {path}")]
    return [ok("certificate key", f"{path} readable by root only")]


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# -- ports ---------------------------------------------------------------------------------
def ports(config: Config) -> list[Finding]:
    wanted = [("l7r.port", config.get("l7r.address"), config.get_int("l7r.port"))]
    for prefix in ("l7r", "hkd"):
        port = config.get_int(f"{prefix}.metrics.port")
        if port:
            wanted.append((f"{prefix}.metrics.port", config.get(f"{prefix}.metrics.address"),
                           port))
    return [_port(key, address, port) for key, address, port in wanted]


def _port(key: str, address: str, port: int) -> Finding:
    host = "0.0.0.0" if address.strip() in ("", "*") else address.strip()
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        return ok(f"port {port}", f"{key} {port} is free")
    except OSError as e:
        error = e.strerror
    holder = _listener(port)
    if holder is not None and any(name in holder[1] for name in OWN_DAEMONS):
        return ok(f"port {port}", f"{key} {port} is served by this node's {holder[1]}"
                                  f" (pid {holder[0]})")
    who = f"pid {holder[0]} ({holder[1]})" if holder else error
    return problem(f"port {port}", f"{key} {port} on {host} is taken: {who}",
                   f"stop what holds it, or set {key} to a free port in node.conf")


def _listener(port: int) -> Optional[tuple[int, str]]:
    """(pid, command line) of a process listening on ``port``, if one can be seen."""
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                try:
                    return conn.pid, " ".join(psutil.Process(conn.pid).cmdline())[:200]
                except psutil.Error:
                    return conn.pid, "?"
    except psutil.AccessDenied:
        pass
    return None


# -- the VMs' side -------------------------------------------------------------------------
def nxagent(config: Config) -> list[Finding]:
    command = config.get("command.nxagent").strip()
    found = shutil.which(command)
    if found is None:
        return [problem("nxagent", f"{command} (command.nxagent) not found",
                        "apt-get install nxagent")]
    return [ok("nxagent", f"nxagent at {found}")]


def hypervisor(config: Config) -> list[Finding]:
    name = config.get("vm.hypervisor").strip()
    if name == "process":
        return _process_backend(config)
    return _libvirt_backend(config, name)


def _process_backend(config: Config) -> list[Finding]:
    account = config.get("vm.process.account").strip()
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        findings = [problem("hypervisor", f"the sessions' account {account!r}"
                            " (vm.process.account) does not exist",
                            f"useradd --system --user-group --no-create-home {account}")]
    else:
        findings = [ok("hypervisor", f"process VMs run sessions as {account}")] \
            if entry.pw_uid != 0 else [problem(
                "hypervisor", f"vm.process.account {account} is root: sessions must never"
                " run as root", "set vm.process.account to an unprivileged account")]
    if os.geteuid() == 0 and config.get("vm.network.gateway", default="").strip():
        findings += [_command("ip", config.get("command.ip"), "apt-get install iproute2"),
                     _bridge(config)]
    return findings


def _libvirt_backend(config: Config, name: str) -> list[Finding]:
    findings: list[Finding] = []
    uri = config.get(f"vm.{name}.uri", default=LIBVIRT_URIS.get(name, "qemu:///system"))
    try:
        import libvirt  # the 'libvirt' extra: only the libvirt backends need it
    except ImportError:
        findings.append(problem("libvirt", "libvirt-python is not installed",
                                "apt-get install libvirt-dev && pip install 'qvd-node[libvirt]'"))
    else:
        try:
            libvirt.open(uri).close()
            findings.append(ok("libvirt", f"libvirt reachable at {uri}"))
        except libvirt.libvirtError as e:
            findings.append(problem("libvirt", f"libvirt at {uri} unreachable: {e}",
                                    "apt-get install libvirt-daemon-system &&"
                                    " systemctl start libvirtd"))
    findings.append(_bridge(config))
    if config.get_bool("vm.network.use_dhcp"):
        findings.append(_command("dnsmasq", "dnsmasq", "apt-get install dnsmasq-base"))
    if name == "lxc" and config.get("vm.lxc.unionfs.type").strip() == "overlayfs":
        findings.append(_overlayfs(config))
    return findings


def _command(check: str, command: str, fix: str) -> Finding:
    found = shutil.which(command.strip())
    return ok(check, f"{check} at {found}") if found else problem(
        check, f"{command} not found", fix)


def _bridge(config: Config) -> Finding:
    bridge = config.get("vm.network.bridge").strip()
    if os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
        return ok("bridge", f"bridge {bridge} (vm.network.bridge) exists")
    return problem("bridge", f"no bridge {bridge} (vm.network.bridge) on this node",
                   f"ip link add {bridge} type bridge && ip addr add <gateway>/<prefix> dev"
                   f" {bridge} && ip link set {bridge} up (or set vm.network.bridge)")


def _overlayfs(config: Config, filesystems: str = "/proc/filesystems") -> Finding:
    try:
        with open(filesystems) as f:
            known = f.read().split()
    except OSError:
        known = []
    if "overlay" in known:
        return ok("overlayfs", "overlayfs available")
    module = config.get("vm.lxc.unionfs.overlayfs.module.name").strip()
    return problem("overlayfs", "the kernel has no overlay filesystem",
                   f"modprobe {module} (and list it in /etc/modules)")


# -- all of them ---------------------------------------------------------------------------
def examine(config_path: Optional[str]) -> Iterator[Finding]:
    """Every check, in order; the ones that need what failed are skipped."""
    config, found = configuration(config_path)
    yield from found
    if config is None or not all(f.ok for f in found):
        for check in ("database", "schema", "host", "clock", "certificate", "ports",
                      "nxagent", "hypervisor"):
            yield skipped(check, "the configuration is unusable")
        return
    conn, found = database(config)
    yield from found
    if conn is None:
        for check in ("schema", "host", "clock"):
            yield skipped(check, "QVD-DB is unreachable")
    else:
        try:
            found = _guarded("schema", lambda: schema(conn))
            yield from found
            if all(f.ok for f in found):
                apply_configs_now(conn, config)  # what the daemons will see
                yield from _guarded("host", lambda: host_row(conn, config))
            else:
                yield skipped("host", "QVD-DB has no usable schema")
            yield from _guarded("clock", lambda: clock(conn))
        finally:
            conn.close()
    for name, check in (("certificate", certificate), ("ports", ports), ("nxagent", nxagent),
                        ("hypervisor", hypervisor)):
        yield from _guarded(name, lambda check=check: check(config))


def _guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A check's findings; one that breaks is a problem, not a traceback."""
    try:
        return check()
    except (ConfigError, DatabaseError, OSError) as e:
        return [problem(name, f"cannot check: {e}", "see the message")]
    except Exception as e:  # psycopg2 errors on a half-deployed database, and the like
        return [problem(name, f"cannot check: {type(e).__name__}: {e}", "see the message")]
