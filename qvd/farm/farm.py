"""A farm of QVD nodes on this machine: build it, run it, break parts of it, remove it.

Blocking code (subprocesses, a psycopg2 connection), for the ``qvd-farm``
command and for tests and benches, which call it from a thread.  Every wait
is a bounded poll of a condition (a row, an answer, haproxy's view).

Directory of a farm::

    farm.json            what the farm is (also in /run/qvd-farm/<id>.json)
    admin.conf           node.conf for qa on this machine (QVD-DB only)
    ssl/                 the L7R certificate and key every node serves
    storage/             shared storage: staging, images, homes (NFS in a real farm)
    pg/                  the QVD-DB cluster
    haproxy/             haproxy's configuration, stats socket and log
    nodes/node<i>/       node.conf, run/, log/, process/ (local: VM state), hkd.log and
                         l7r.log (node.log when combined)
"""

from __future__ import annotations

import io
import os
import secrets
import shlex
import signal
import ssl
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import psutil

from qvd.admin.cli import main as qa_main
from qvd.admin.command import parse_command
from qvd.admin.ops import Admin
from qvd.config import Config, parse_properties
from qvd.db import connect_sync
from qvd.db.deploy import deploy
from qvd.db.oneshot import query_once
from qvd.embedded import ensure_certificate, ensure_session_account
from qvd.farm import FarmError, child_environment, janitor, network
from qvd.farm.haproxy import HAProxy
from qvd.farm.network import Plan
from qvd.pgcluster import LocalCluster

L7R_PORT = 8443
PG_PORT = 5432
DB_NAME = DB_USER = "qvd"
TWISTD = "from twisted.scripts.twistd import run; run()"
DISPLAYS = 1000  # X displays of one node: 1000 * (i + 1) and up for node i
START_TIMEOUT = 90.0  # seconds a node may take to serve, haproxy to see it
STOP_TIMEOUT = 30.0

# QVD 4's timers are minutes long; a farm for tests and demos ticks every second,
# declares a silent node lost after 6 s and polls VMAs and commands often.
FAST_TIMERS = """\
internal.hkd.agent.ticker.delay = 1
internal.hkd.agent.ticker.timeout = 120
internal.hkd.agent.command_handler.delay = 1
internal.hkd.agent.vm_command_handler.delay = 1
internal.hkd.agent.cluster_monitor.delay = 1
internal.hkd.agent.cluster_monitor.long_delay = 2
internal.hkd.agent.cluster_monitor.fuzzy_delay = 0
internal.hkd.cluster.node.timeout = 6
internal.hkd.agent.l7rkiller.delay = 2
internal.hkd.vmhandler.vma_monitor.delay.after.ok = 2
internal.hkd.vmhandler.vma_monitor.delay.after.error = 0.5
internal.hkd.process.check.delay = 0.5
internal.hkd.process.timeout.on_state.stopping.shutdown.waiting_for_process = 5
internal.hkd.process.timeout.on_state.stopping.stop.waiting_for_process = 3
internal.hkd.stopping.vms.timeout = 20
internal.l7r.poll_time.vm = 0.3
internal.l7r.poll_time.x = 0.3
"""


@dataclass
class Options:
    nodes: int
    directory: Optional[str] = None  # None: a new temporary one, removed at the end
    l7r_processes: int = 1
    account: str = "qvd"  # vm.process.account (created if missing, as ./run-node does)
    session: str = "/usr/bin/xterm"  # command.x-session of the VMs
    fast: bool = False  # FAST_TIMERS
    extra: str = ""  # more node.conf lines for every node
    combined: bool = False  # one ``twistd qvd-node`` per node instead of qvd-hkd + qvd-l7r


@dataclass
class Daemon:
    """One twistd process of a node, in the node's network namespace."""

    plugin: str
    argv: list[str]
    log_path: str
    process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=child_environment(),
                                            cwd=os.path.dirname(self.log_path))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, number: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(number)

    def wait(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """The exit status once it exited (None if it was never started)."""
        if self.process is None:
            return None
        return self.process.wait(timeout)

    def tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Node:
    """One node; ``hkd`` and ``l7r`` are the same ``qvd-node`` daemon when combined."""

    index: int
    name: str
    namespace: str
    address: str
    directory: str
    conf: str
    hkd: Daemon
    l7r: Daemon
    host_id: int = 0

    @property
    def daemons(self) -> list[Daemon]:
        return [self.hkd] if self.hkd is self.l7r else [self.hkd, self.l7r]


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             explain: Callable[[], str] = lambda: "", interval: float = 0.1) -> Any:
    """``check()`` until it returns something true; ``FarmError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise FarmError(f"{what}: not after {timeout:g}s (last: {value!r}){explain()}")
        time.sleep(interval)


def client_context() -> ssl.SSLContext:
    """TLS as a health check speaks it: no certificate check (haproxy: ``verify none``)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ping(address: str, port: int = L7R_PORT, timeout: float = 3.0) -> tuple[int, bytes]:
    """(status, body) of ``GET /qvd/ping`` over TLS; (0, why) if there is no answer."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with client_context().wrap_socket(raw) as sock:
                sock.sendall(b"GET /qvd/ping HTTP/1.1\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and value.strip().isdigit():
                        length = int(value)
                while len(body) < length and (chunk := sock.recv(4096)):
                    body += chunk
    except (OSError, ssl.SSLError) as e:
        return 0, str(e).encode()
    words = head.split(None, 2)
    return (int(words[1]) if len(words) > 1 and words[1].isdigit() else 0), body


class Farm:
    """``up()`` builds and starts everything, ``down()`` removes it (also on failure)."""

    def __init__(self, options: Options):
        self.options = options
        self.plan: Optional[Plan] = None
        self.state: Optional[janitor.State] = None
        self.directory = ""
        self.nodes: list[Node] = []
        self.database: Optional[LocalCluster] = None
        self.haproxy: Optional[HAProxy] = None
        self.password = secrets.token_hex(12)
        self._janitor: Optional[subprocess.Popen] = None

    # -- addresses and files -------------------------------------------------------
    @property
    def address(self) -> str:
        """Where clients connect (haproxy), and QVD-DB listens."""
        assert self.plan is not None
        return self.plan.gateway

    @property
    def port(self) -> int:
        return L7R_PORT

    @property
    def cert(self) -> str:
        return os.path.join(self.directory, "ssl", "cert.pem")

    @property
    def admin_conf(self) -> str:
        return os.path.join(self.directory, "admin.conf")

    def node(self, i: int) -> Node:
        return self.nodes[i - 1]

    def _db_conf(self, nodename: str) -> str:
        return (f"nodename = {nodename}\ndatabase.host = {self.address}\n"
                f"database.port = {PG_PORT}\ndatabase.name = {DB_NAME}\n"
                f"database.user = {DB_USER}\ndatabase.password = {self.password}\n")

    def _node_conf(self, i: int, directory: str) -> str:
        plan = self.plan
        assert plan is not None
        o = self.options
        return (self._db_conf(f"node{i}")
                + f"path.run = {directory}/run\npath.log = {directory}/log\n"
                f"path.storage.root = {self.directory}/storage\n"
                f"path.storage.process = {directory}/process\n"
                f"l7r.address = {plan.address(i)}\nl7r.port = {L7R_PORT}\n"
                f"l7r.processes = {o.l7r_processes}\n"
                f"vm.hypervisor = process\nvm.process.account = {o.account}\n"
                f"vm.network.bridge = {network.VM_BRIDGE}\n"
                f"vm.network.gateway = {plan.vm_gateway(i)}\n"
                f"vm.network.netmask = 255.255.255.0\nvm.process.ip.range = {plan.vm_range(i)}\n"
                f"internal.vm.network.device.prefix = {plan.vm_prefix(i)}\n"
                # X displays are machine-wide (lock files in /tmp): a range per node
                f"internal.hkd.process.display.base = {DISPLAYS * (i + 1)}\n"
                f"internal.hkd.process.display.span = {DISPLAYS}\n"
                f"command.x-session = {o.session}\n"
                + (FAST_TIMERS if o.fast else "") + o.extra)

    # -- up ----------------------------------------------------------------------------
    def up(self) -> None:
        if os.geteuid() != 0:
            raise FarmError("qvd-farm needs root (network namespaces, a bridge)")
        try:
            self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> None:
        o = self.options
        owned = o.directory is None
        if not owned and os.path.isdir(o.directory) and os.listdir(o.directory):
            raise FarmError(f"{o.directory} is not empty: a farm starts from nothing")
        self.directory = os.path.abspath(o.directory or tempfile.mkdtemp(prefix="qvd-farm-"))
        os.makedirs(self.directory, exist_ok=True)
        os.chmod(self.directory, 0o755)  # PostgreSQL and the session account go below
        with network.planning_lock():
            plan = self.plan = network.choose(o.nodes)
            self.state = janitor.State(plan, self.directory, owned, os.getpid(),
                                       os.path.join(self.directory, "pg"))
            self.state.save()
            self._janitor = janitor.start(plan.farm_id)
            network.build(plan)
        with open(os.path.join(self.directory, "farm.json"), "w") as f, open(self.state.path) as s:
            f.write(s.read())
        self._start_database()
        self._load_data()
        self.nodes = [self._make_node(i) for i in range(1, o.nodes + 1)]
        for node in self.nodes:
            self.start_daemons(node)
        for node in self.nodes:
            self.wait_serving(node)
        self._start_haproxy()

    def _start_database(self) -> None:
        assert self.state is not None
        cluster = self.database = LocalCluster(root=self.state.pg_root, port=PG_PORT,
                                               host=self.address)
        cluster.init()
        assert self.plan is not None
        with open(os.path.join(cluster.datadir, "pg_hba.conf"), "a") as hba:
            hba.write(f"host all all 10.{self.plan.octet}.0.0/16 scram-sha-256\n")
        cluster.mark_temporary()
        cluster.start()
        cluster.ensure_role_and_database(DB_USER, self.password, DB_NAME)
        with open(self.admin_conf, "w") as f:
            f.write(self._db_conf("farm-admin"))
        conn = connect_sync(self.admin_config(), "qvd-farm")
        try:
            deploy(conn)
        finally:
            conn.close()

    def admin_config(self) -> Config:
        with open(self.admin_conf) as f:
            return Config(parse_properties(f.read()), self.admin_conf)

    def _load_data(self) -> None:
        """Hosts, the certificate every L7R serves, an OSF with a DI for process VMs."""
        plan = self.plan
        assert plan is not None
        if os.geteuid() == 0 and self.options.account != "nobody":
            ensure_session_account(self.options.account)
        addresses = [plan.gateway] + [plan.address(i) for i in range(1, plan.nodes + 1)]
        key = os.path.join(self.directory, "ssl", "key.pem")
        ensure_certificate(key, self.cert, "qvd-farm", addresses)
        staging = os.path.join(self.directory, "storage", "staging")
        os.makedirs(staging, exist_ok=True)
        image = os.path.join(staging, "desk.tar.gz")
        with open(image, "wb") as f:
            f.write(b"a DI the process hypervisor does not unpack\n")
        commands = [["config", "ssl", f"key={key},cert={self.cert}"],
                    ["osf", "new", "name=desk"], ["di", "new", f"disk_image={image},osf=desk"]]
        commands += [["host", "new", f"name=node{i},address={plan.address(i)}"]
                     for i in range(1, plan.nodes + 1)]
        self.admin(commands)

    def _make_node(self, i: int) -> Node:
        plan = self.plan
        assert plan is not None
        directory = os.path.join(self.directory, "nodes", f"node{i}")
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        conf = os.path.join(directory, "node.conf")
        with open(conf, "w") as f:
            f.write(self._node_conf(i, directory))
        prefix = network.in_namespace(plan.namespace(i))

        def daemon(plugin: str, log: str) -> Daemon:
            argv = prefix + [sys.executable, "-c", TWISTD, "-n", "--pidfile=", plugin,
                             "--config", conf]
            return Daemon(plugin, argv, os.path.join(directory, log))

        host_id = self.sql("SELECT id FROM hosts WHERE name = %s", (f"node{i}",))[0][0]
        if self.options.combined:
            hkd = l7r = daemon("qvd-node", "node.log")
        else:
            hkd, l7r = daemon("qvd-hkd", "hkd.log"), daemon("qvd-l7r", "l7r.log")
        return Node(i, f"node{i}", plan.namespace(i), plan.address(i), directory, conf, hkd,
                    l7r, host_id)

    def _start_haproxy(self) -> None:
        assert self.state is not None
        servers = [(n.name, n.address, L7R_PORT) for n in self.nodes]
        self.haproxy = HAProxy(os.path.join(self.directory, "haproxy"), self.address, L7R_PORT,
                               servers)
        self.state.haproxy_pid = self.haproxy.start()
        self.state.haproxy_config = self.haproxy.config
        self.state.save()
        self.wait_balanced({n.name: "UP" for n in self.nodes})

    # -- nodes ---------------------------------------------------------------------------
    def start_daemons(self, node: Node) -> None:
        for daemon in node.daemons:
            if not daemon.running:
                daemon.start()

    def wait_serving(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        """Until the node's L7R answers its ping with 200 (its host is ``running``)."""
        wait_for(lambda: ping(node.address)[0] == 200, timeout, f"{node.name} serving",
                 lambda: self.explain(node))

    def wait_hkd_running(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        """Until the node's current HKD process has its host ``running`` (its heartbeat
        writes its pid): after a restart, it has then recovered the VMs it found."""
        wait_for(lambda: self.sql("SELECT pid, state FROM host_runtimes WHERE host_id = %s",
                                  (node.host_id,)) == [(node.hkd.pid, "running")],
                 timeout, f"{node.name}'s HKD running", lambda: self.explain(node))

    def start_node(self, i: int) -> None:
        node = self.node(i)
        self.start_daemons(node)
        self.wait_serving(node)

    def kill_node(self, i: int) -> list[int]:
        """SIGKILL every process of the node (HKD, L7R and its workers), as a node that
        dies at once; its VMs (namespaces of their own) keep running.  The pids killed."""
        node = self.node(i)
        pids = network.pids_in(node.namespace)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for daemon in node.daemons:
            if daemon.process is not None:
                daemon.wait()
        return pids

    def l7r_workers(self, i: int) -> list[int]:
        """The pids of node ``i``'s extra L7R processes (``l7r.processes`` > 1)."""
        try:
            children = psutil.Process(self.node(i).l7r.pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(p.pid for p in children if "--worker" in p.cmdline())

    def vm_pids(self, i: int, vm_id: int) -> list[int]:
        """Every process of a VM on node ``i`` (its VMA, nxagent, the session), found by
        the VM's namespace."""
        assert self.plan is not None
        return network.pids_in(f"{self.plan.vm_prefix(i)}{vm_id}")

    # -- haproxy ---------------------------------------------------------------------------
    def balancer(self) -> dict[str, tuple[str, str]]:
        assert self.haproxy is not None
        return self.haproxy.servers()

    def wait_balanced(self, wanted: dict[str, str], timeout: float = START_TIMEOUT,
                      interval: float = 0.1) -> float:
        """Until haproxy reports each named server in the wanted status (UP, DOWN); the
        seconds it took."""
        started = time.monotonic()
        wait_for(lambda: all(self.balancer().get(name, ("",))[0] == status
                             for name, status in wanted.items()),
                 timeout, f"haproxy seeing {wanted}", lambda: f" ({self.balancer()})", interval)
        return time.monotonic() - started

    # -- QVD-DB --------------------------------------------------------------------------
    def sql(self, statement: str, params: Sequence[Any] = ()) -> list[tuple]:
        """One statement on QVD-DB, in its own transaction; its rows if any."""
        return query_once(self.admin_config(), statement, params, "qvd-farm")

    def admin(self, commands: list[list[str]]) -> None:
        """``qa`` commands (argument lists) on one connection."""
        config = self.admin_config()
        conn = connect_sync(config, "qvd-farm")
        try:
            admin = Admin(conn, config)
            for command in commands:
                admin.run(parse_command(command))
        finally:
            conn.close()

    def qa(self, line: str) -> str:
        """``qa <line>`` as an administrator types it; its output (``FarmError`` if it fails)."""
        out, err = io.StringIO(), io.StringIO()
        if qa_main(["-c", self.admin_conf] + shlex.split(line), out, err) != 0:
            raise FarmError(f"qa {line}: {err.getvalue().strip()}")
        return out.getvalue()

    def add_desktops(self, count: int, first: int = 1) -> list[tuple[str, str, int]]:
        """Users ``user<n>`` (password ``pw<n>``) with a VM ``desk<n>`` each:
        [(login, password, vm id)]."""
        numbers = range(first, first + count)
        commands = []
        for n in numbers:
            commands += [["user", "new", f"login=user{n},password=pw{n}"],
                         ["vm", "new", f"name=desk{n},user=user{n},osf=desk"]]
        self.admin(commands)
        ids = dict(self.sql("SELECT name, id FROM vms"))
        return [(f"user{n}", f"pw{n}", ids[f"desk{n}"]) for n in numbers]

    # -- down ------------------------------------------------------------------------------
    def down(self) -> None:
        """Stop and remove everything; the janitor is told it has nothing left to do."""
        for node in self.nodes:
            for daemon in node.daemons:
                daemon.signal(signal.SIGKILL)
        if self.haproxy is not None:
            self.haproxy.stop()
        if self.state is not None:
            janitor.teardown(self.state)
        for node in self.nodes:
            for daemon in node.daemons:
                if daemon.process is not None:
                    daemon.process.wait(STOP_TIMEOUT)
        if self._janitor is not None and self._janitor.poll() is None:
            assert self._janitor.stdin is not None
            try:
                self._janitor.stdin.write(janitor.DONE)
                self._janitor.stdin.close()
            except BrokenPipeError:
                pass
            self._janitor.wait(STOP_TIMEOUT)

    def explain(self, node: Node) -> str:
        """The end of a node's logs, for an error message."""
        return "".join(f"\n--- {d.log_path}\n{d.tail()}" for d in node.daemons)

    def summary(self) -> dict[str, Any]:
        assert self.plan is not None
        return {
            "id": self.plan.farm_id, "directory": self.directory,
            "balancer": f"{self.address}:{self.port}", "ca": self.cert,
            "database": f"{self.address}:{PG_PORT}", "admin_conf": self.admin_conf,
            "nodes": {n.name: {"address": n.address, "namespace": n.namespace,
                               "vm_network": self.plan.vm_network(n.index),
                               "conf": n.conf} for n in self.nodes},
        }
