"""A whole QVD node for the client tests: QVD-DB, ``twistd qvd-node`` (HKD + L7R over TLS,
``process`` hypervisor, real VMAs and nxagent), and ``qvd-client`` processes on this
checkout (their screen is an Xvfb, ``tests.support.x11``).

The VM's session is ``xclock`` under a rootless nxagent (``-R``), so that its window
becomes a window of the client's own X server, where ``xwininfo`` can name it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any, Optional

import psutil
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from qvd.embedded import ensure_certificate
from qvd.http.simplerpc import SimpleRPCClient
from qvd.pgcluster import port_in_use
from qvd.stream.sockets import free_port
from tests.support.admin import qa
from tests.support.hkd import TIMERS, kill_vmas
from tests.support.paths import ROOT
from tests.support.postgres import drop_database, new_database
from tests.support.processes import Twistd
from tests.support.waiting import poll_blocking

CLIENT = "from qvd.client.cli import main; main()"
NODE_EXTRA = """\
nodename = test-node
vm.hypervisor = process
vm.process.account = nobody
l7r.address = 127.0.0.1
internal.l7r.poll_time.vm = 0.3
internal.l7r.poll_time.x = 0.3
internal.hkd.agent.l7rkiller.delay = 1
command.x-session = /usr/bin/xclock
command.nxagent.args.extra = -R
vma.nxagent.loopback = 1
"""



class ClientProcess(ProcessProtocol):
    """One ``qvd-client`` run; ``ended`` fires with its exit status."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int] = Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.out += data
        else:
            self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode or 0)

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "replace")


def spawn_client(args: list[str], env: dict[str, str],
                 display: Optional[str] = None) -> ClientProcess:
    """``qvd-client <args>`` on this checkout, with only ``env`` (and PATH, DISPLAY)."""
    env = dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin"), PYTHONPATH=ROOT)
    if display:
        env["DISPLAY"] = display
    protocol = ClientProcess()
    argv = [sys.executable, "-c", CLIENT] + args
    reactor.spawnProcess(protocol, argv[0], argv, env=env)
    return protocol


class NodeTestCase(unittest.TestCase):
    """QVD-DB with host ``test-node``, user alice/s3cret and her VM ``desk``."""

    timeout = 110

    def setUp(self) -> None:
        self.db = new_database()
        self.addCleanup(drop_database, self.db)
        self.root = tempfile.mkdtemp(prefix="qvd-client-test-")
        os.chmod(self.root, 0o755)  # the session account must reach its home below
        self.addCleanup(shutil.rmtree, self.root, True)
        self.key = os.path.join(self.root, "ssl", "key.pem")
        self.cert = os.path.join(self.root, "ssl", "cert.pem")
        ensure_certificate(self.key, self.cert, "localhost")
        self.port = free_port()
        self.conf = self.db.write_conf(self.root, (
            f"{NODE_EXTRA}{TIMERS}l7r.port = {self.port}\npath.run = {self.root}/run\n"
            f"path.log = {self.root}/log\npath.storage.root = {self.root}/storage\n"
            f"path.l7r.ssl.key = {self.key}\npath.l7r.ssl.cert = {self.cert}\n"))
        image = os.path.join(self.root, "storage", "staging", "desk.tar.gz")
        os.makedirs(os.path.dirname(image))
        with open(image, "wb") as f:
            f.write(b"a DI the process hypervisor does not unpack")
        self.qa("host new name=test-node,address=127.0.0.1")
        self.qa("osf new name=desk")
        self.qa(f"di new disk_image={image},osf=desk")
        self.qa("user new login=alice,password=s3cret")
        self.qa("vm new name=desk,user=alice,osf=desk")
        self.vm_id = self.db.query("SELECT id FROM vms WHERE name = 'desk'")[0][0]
        self.home = os.path.join(self.root, "home")
        os.makedirs(self.home)
        self.node: Optional[Twistd] = None
        self.clients: list[ClientProcess] = []
        self.addCleanup(self._stop_everything)

    def qa(self, line: str) -> str:
        return qa(self.conf, line)

    # -- the node --------------------------------------------------------------------
    @inlineCallbacks
    def start_node(self, plugin: str = "qvd-node"):
        """``twistd -n <plugin>`` (qvd-node, or qvd-l7r alone), once its L7R port answers."""
        self.node = Twistd(plugin, self.conf, self.root)
        self.node.start()
        try:
            yield poll_blocking(lambda: port_in_use(self.port), bool, 30, f"{plugin} listening")
            if plugin == "qvd-node":
                yield poll_blocking(self.host_state, lambda s: s == "running", 30, "host running")
        except AssertionError as e:
            raise AssertionError(f"{e}{self.explain()}") from None

    def host_state(self) -> str:
        return self.db.query("SELECT state FROM host_runtimes hr JOIN hosts h ON h.id = hr.host_id"
                             " WHERE h.name = 'test-node'")[0][0]

    def runtime(self) -> dict[str, Any]:
        columns = ("vm_state", "user_state", "vm_address", "vm_vma_port", "vm_pid")
        row = self.db.query(f"SELECT {', '.join(columns)} FROM vm_runtimes WHERE vm_id = %s",
                            (self.vm_id,))[0]
        return dict(zip(columns, row))

    def x_state(self) -> Deferred:
        row = self.runtime()
        return SimpleRPCClient(reactor, row["vm_address"], row["vm_vma_port"], 5).call("x_state")

    def runtime_dir(self) -> str:
        """The VMA's path.run (its nxagent.conf, state files)."""
        return os.path.join(self.root, "storage", "process", str(self.vm_id), "run")

    def session_pids(self, name: str = "xclock") -> list[int]:
        """Processes called ``name`` under the VM's VMA."""
        pid = self.runtime()["vm_pid"]
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return sorted(p.pid for p in children if p.name() == name)

    # -- clients ---------------------------------------------------------------------
    def client(self, *args: str, display: Optional[str] = None,
               user: Optional[tuple[str, str]] = ("alice", "s3cret"),
               tls: Optional[list[str]] = None, env: Optional[dict[str, str]] = None
               ) -> ClientProcess:
        """A running ``qvd-client -h 127.0.0.1 -p <port> --ca <cert> [-u -w] <args>``."""
        argv = ["-h", "127.0.0.1", "-p", str(self.port)]
        argv += ["--ca", self.cert] if tls is None else tls
        if user:
            argv += ["-u", user[0], "-w", user[1]]
        protocol = spawn_client(argv + list(args), dict(env or {}, HOME=self.home), display)
        self.clients.append(protocol)
        return protocol

    @inlineCallbacks
    def run_client(self, *args: str, **kwargs: Any):
        """A finished run: (exit status, stdout, stderr)."""
        protocol = self.client(*args, **kwargs)
        code = yield protocol.ended
        return code, protocol.stdout, protocol.stderr

    def explain(self, *protocols: ClientProcess) -> str:
        """What a reader of a failure needs: the clients' stderr and the node's log."""
        text = "".join(f"\n--- client stderr\n{p.stderr}" for p in protocols)
        if self.node is not None:
            lines = [line for line in self.node.output().splitlines(True)
                     if "Starting factory" not in line and "Stopping factory" not in line]
            text += "\n--- node log\n" + "".join(lines[-60:])
        nxagent_log = os.path.join(os.path.dirname(self.runtime_dir()), "log", "qvd-nxagent.log")
        if os.path.exists(nxagent_log):
            with open(nxagent_log, errors="replace") as f:
                text += "\n--- VM's nxagent log\n" + "".join(f.readlines()[-40:])
        return text

    @inlineCallbacks
    def _stop_everything(self):
        for client in self.clients:
            if not client.ended.called:
                client.transport.signalProcess("KILL")
                yield client.ended
        if self.node is not None and self.node.running:
            yield self.node.kill("TERM")
        yield threads.deferToThread(kill_vmas, self.root)
