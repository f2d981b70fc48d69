"""The built-in ``process`` hypervisor: each VM is a local ``qvd-vma`` process.

Every VM gets a directory ``<path.storage.process>/<vm_id>`` holding its
generated ``vma.conf``, the VMA's run and log files and ``vm.json`` (pid,
start time, address and ports).  The VMA gets its own RPC port and X
display, and runs its sessions as ``vm.process.account`` (never root, never
created or changed: this is the node's own system) in a per-VM home under
``path.storage.homes``.  The VMAs live in their own sessions, so they
survive the HKD; a restarted HKD adopts them from ``vm.json`` after checking
that the pid still is that VM's ``qvd-vma`` (same start time, same config
on its command line).  As root with ``vm.network.gateway`` set, each VMA
runs in its own network namespace at the VM's IP (``qvd.hkd.netns``).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import psutil
from twisted.internet import defer, task, threads
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from qvd.config import Config
from qvd.db.runtimes import VMSpec
from qvd.hkd import addresses, netns
from qvd.hkd.hypervisor import IHypervisor, IVMInstance, LaunchError
from qvd.stream.once import Once

log = Logger()

STATE_FILE = "vm.json"
CONF_FILE = "vma.conf"
# node.conf keys a VMA also reads (hooks, X session command, nxagent timers).
PASSED_PREFIXES = ("vma.", "command.", "internal.nxagent.timeout.")
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
# ports of display n: NX 4000+n, X 6000+n, and nxagent's CUPS, sound and slave channels
CHANNEL_PORTS = (4000, 6000, 2000, 7000, 11000)
X_LOCK = "/tmp/.X{}-lock"
X_SOCKET = "/tmp/.X11-unix/X{}"


def _ports(vma_port: int, display: int) -> dict[str, int]:
    """vm_runtimes' ports: nxagent's is 4000 + display; no ssh, VNC, serial or monitor."""
    return {"vma": vma_port, "x": 4000 + display, "ssh": 0, "vnc": 0, "serial": 0, "mon": 0}


@dataclass(frozen=True)
class Record:
    """What ``vm.json`` keeps of a running VM."""

    vm_id: int
    pid: int
    create_time: float
    address: str
    vma_port: int
    display: int
    conf: str
    namespace: Optional[str] = None

    @property
    def ports(self) -> dict[str, int]:
        return _ports(self.vma_port, self.display)


@dataclass(frozen=True)
class _Layout:
    directory: str
    conf: str
    address: str
    vma_port: int
    display: int
    namespace: Optional[str]


class _Exit:
    """The one exit of a VMA process, for every ``when_exited`` caller."""

    def __init__(self) -> None:
        self._exit = Once()

    def when_exited(self) -> defer.Deferred[None]:
        return self._exit.wait()

    def _exited(self) -> None:
        self._exit.fire()


@implementer(IVMInstance)
class _SpawnedVM(_Exit, ProcessProtocol):
    """A VMA this HKD started: its exit comes from SIGCHLD."""

    def __init__(self, layout: _Layout):
        _Exit.__init__(self)
        self.address = layout.address
        self.ports = _ports(layout.vma_port, layout.display)
        self.pid = 0

    def processEnded(self, reason: Failure) -> None:
        self._exited()

    def signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass


@implementer(IVMInstance)
class _AdoptedVM(_Exit):
    """A VMA a previous HKD started: not our child, so its exit is polled."""

    def __init__(self, clock: IReactorTime, record: Record, process: psutil.Process, delay: float):
        super().__init__()
        self.pid = record.pid
        self.address = record.address
        self.ports = record.ports
        self._process = process
        self._loop = task.LoopingCall(self._check)
        self._loop.clock = clock
        self._loop.start(delay, now=False).addErrback(
            lambda f: log.failure("watching adopted VMA {pid} failed", f, pid=self.pid))

    def _check(self) -> defer.Deferred[None]:
        return threads.deferToThread(_alive, self._process).addCallback(self._checked)

    def _checked(self, alive: bool) -> None:
        if not alive:
            self._loop.stop()
            self._exited()

    def signal(self, name: str) -> None:
        number = getattr(signal, f"SIG{name}")
        threads.deferToThread(_send, self._process, number).addErrback(
            lambda f: log.failure("cannot signal VMA {pid}", f, pid=self.pid))


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _send(process: psutil.Process, number: int) -> None:
    try:
        process.send_signal(number)
    except psutil.NoSuchProcess:
        pass


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@implementer(IHypervisor)
class ProcessHypervisor:
    name = "process"

    def __init__(self, config: Config, reactor: Any):
        self.config = config
        self.reactor: IReactorProcess = reactor
        self._setsid = shutil.which("setsid") or "/usr/bin/setsid"
        self._namespaces = netns.Namespaces(config, reactor)
        self._lock = defer.DeferredLock()
        self._displays: dict[int, int] = {}
        self._addresses: dict[int, str] = {}

    # -- launch ---------------------------------------------------------------------
    @defer.inlineCallbacks
    def launch(self, spec: VMSpec) -> Any:
        passed = {k: v for k, v in self.config.effective().items() if k.startswith(PASSED_PREFIXES)}
        net = netns.plan(self.config, spec.vm_id, self._address(spec))
        if net is not None:
            self._addresses[spec.vm_id] = net.address
        settings = self._settings(spec.vm_id, net)
        yield self._lock.acquire()
        try:
            layout = yield threads.deferToThread(
                self._prepare, spec.vm_id, settings, passed, set(self._displays.values()))
            self._displays[spec.vm_id] = layout.display
        except (OSError, ValueError) as e:
            raise LaunchError(f"cannot prepare {settings['root']}: {e}") from e
        finally:
            self._lock.release()
        try:
            if net is not None:
                yield self._namespaces.create(net)
            vm = yield self._spawn(layout, self._namespaces.exec_prefix(net) if net else [])
        except Exception:
            yield self.release(spec.vm_id)
            raise
        return vm

    def _address(self, spec: VMSpec) -> Optional[str]:
        """The VM's IP: one of this node's ``vm.process.ip.range`` when set, else vms.ip."""
        span = self.config.get(addresses.RANGE_KEY, default="").strip()
        if not span or not netns.enabled(self.config):
            return spec.ip
        return addresses.pick(span, spec.vm_id, set(self._addresses.values()))

    def _settings(self, vm_id: int, net: Optional[netns.VMNetwork]) -> dict[str, str]:
        """What ``_prepare`` needs, read in the reactor thread (the config is not thread-safe)."""
        get = self.config.get
        return {
            "root": os.path.join(get("path.storage.process"), str(vm_id)),
            "homes": get("path.storage.homes"),
            "address": net.address if net else get("vm.process.address").strip(),
            "namespace": net.name if net else "",
            "port": get("internal.vm.port.vma") if net else "0",
            "account": get("vm.process.account").strip(),
            "display.base": get("internal.hkd.process.display.base"),
            "display.span": get("internal.hkd.process.display.span"),
        }

    def _prepare(
        self, vm_id: int, settings: dict[str, str], passed: dict[str, str], taken: set[int]
    ) -> _Layout:
        """Directories, ports and vma.conf of one VM (in a thread: file work)."""
        account = self._account(settings["account"])
        address = settings["address"]
        directory = settings["root"]
        for path in (directory, settings["homes"]):
            os.makedirs(path, mode=0o755, exist_ok=True)
        namespace = settings["namespace"] or None
        display = self._display(vm_id, None if namespace else address, taken,
                                int(settings["display.base"]), int(settings["display.span"]))
        port = int(settings["port"]) or _free_port(address)
        layout = _Layout(directory, os.path.join(directory, CONF_FILE), address, port, display,
                         namespace)
        values = dict(passed)
        values.update({
            "path.run": os.path.join(directory, "run"),
            "path.log": os.path.join(directory, "log"),
            "vma.address": address,
            "internal.vm.port.vma": str(layout.vma_port),
            "internal.nxagent.display": str(display),
            "vma.user.provisioning": "0",
            "vma.user.account": account,
            "vma.user.account.home": os.path.join(settings["homes"], str(vm_id)),
            "vma.poweroff.command": "",
        })
        text = "".join(f"{key} = {_escape(value)}\n" for key, value in sorted(values.items()))
        partial = layout.conf + ".new"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(f"# generated by qvd-hkd for VM {vm_id}; rewritten at every start\n{text}")
        os.replace(partial, layout.conf)
        return layout

    @staticmethod
    def _account(name: str) -> str:
        """The session account for the VMA: ours when not root, else a named unprivileged one."""
        if os.geteuid() != 0:
            return ""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LaunchError(
                f"session account {name!r} (vm.process.account) does not exist:"
                f" create it (useradd --system {name}) or name another one") from None
        if entry.pw_uid == 0:
            raise LaunchError("vm.process.account must not be root")
        return name

    @staticmethod
    def _display(vm_id: int, address: Optional[str], taken: set[int], base: int,
                 span: int) -> int:
        """A free X display, first trying one derived from the (cluster-unique) VM id.

        Its ports (``CHANNEL_PORTS``) are probed on ``address`` (None: the VM has its own namespace,
        only the X lock files are shared).
        """
        for i in range(span):
            n = base + (vm_id + i) % span
            if (n not in taken and not os.path.exists(X_LOCK.format(n))
                    and not os.path.exists(X_SOCKET.format(n))
                    and (address is None
                         or all(_bindable(address, offset + n) for offset in CHANNEL_PORTS))):
                return n
        raise LaunchError(f"no free X display between {base} and {base + span - 1}")

    @defer.inlineCallbacks
    def _spawn(self, layout: _Layout, prefix: list[str]) -> Any:
        argv = prefix + [
            self._setsid, sys.executable, "-c", TWISTD, "--nodaemon",
            f"--pidfile={layout.directory}/vma.pid", f"--logfile={layout.directory}/vma.log",
            "qvd-vma", "--config", layout.conf]
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy")}
        output, null = yield threads.deferToThread(_open_output, layout.directory)
        vm = _SpawnedVM(layout)
        try:
            transport = self.reactor.spawnProcess(
                vm, argv[0], argv, env=env, path=layout.directory,
                childFDs={0: null, 1: output, 2: output})
        finally:
            os.close(output)
            os.close(null)
        vm.pid = transport.pid
        try:
            yield threads.deferToThread(self._save, layout, transport.pid)
        except psutil.NoSuchProcess:
            raise LaunchError(f"qvd-vma exited at once; see {layout.directory}/vma.out") from None
        return vm

    @staticmethod
    def _save(layout: _Layout, pid: int) -> None:
        record = Record(int(os.path.basename(layout.directory)), pid,
                        psutil.Process(pid).create_time(), layout.address, layout.vma_port,
                        layout.display, layout.conf, layout.namespace)
        path = os.path.join(layout.directory, STATE_FILE)
        with open(path + ".new", "w", encoding="utf-8") as f:
            json.dump(asdict(record), f)
        os.replace(path + ".new", path)

    # -- adopt / release -------------------------------------------------------------
    @defer.inlineCallbacks
    def adopt(self, vm_id: int) -> Any:
        directory = os.path.join(self.config.get("path.storage.process"), str(vm_id))
        found = yield threads.deferToThread(_find, directory)
        if found is None:
            return None
        record, process = found
        self._displays[vm_id] = record.display
        if record.namespace:
            self._addresses[vm_id] = record.address
        delay = self.config.get_float("internal.hkd.process.check.delay")
        return _AdoptedVM(self.reactor, record, process, delay)

    @defer.inlineCallbacks
    def reap_strays(self, keep: set[int]) -> Any:
        reaped = yield threads.deferToThread(
            _reap_strays, self.config.get("path.storage.process"), keep)
        for vm_id in reaped:
            yield self.release(vm_id)
        return reaped

    @defer.inlineCallbacks
    def release(self, vm_id: int) -> Any:
        self._displays.pop(vm_id, None)
        self._addresses.pop(vm_id, None)
        path = os.path.join(self.config.get("path.storage.process"), str(vm_id), STATE_FILE)
        yield threads.deferToThread(end_session, path)
        if netns.enabled(self.config):
            yield self._namespaces.remove(netns.namespace(self.config, vm_id))
        yield threads.deferToThread(_unlink, path)


def _reap_strays(root: str, keep: set[int]) -> list[int]:
    """SIGKILL every recorded VMA under ``root`` whose VM is not in ``keep`` (the caller
    releases them); forget the records of VMAs long gone."""
    reaped = []
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return reaped
    for name in names:
        if not name.isdigit() or int(name) in keep:
            continue
        directory = os.path.join(root, name)
        found = _find(directory)
        if found is None:
            _unlink(os.path.join(directory, STATE_FILE))
        else:
            _send(found[1], signal.SIGKILL)
            reaped.append(int(name))
    return reaped


def _open_output(directory: str) -> tuple[int, int]:
    output = os.open(os.path.join(directory, "vma.out"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return output, os.open(os.devnull, os.O_RDONLY)


def _find(directory: str) -> Optional[tuple[Record, psutil.Process]]:
    """The recorded VMA if that pid still is it (same start, same config, not a zombie)."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            record = Record(**json.load(f))
        process = psutil.Process(record.pid)
        same = (abs(process.create_time() - record.create_time) < 0.01
                and "qvd-vma" in process.cmdline() and record.conf in process.cmdline())
    except (OSError, ValueError, TypeError, psutil.Error):
        return None
    return (record, process) if same and _alive(process) else None


def end_session(state_file: str) -> None:
    """SIGKILL what is left of a VM, and free its X display.

    The VMA led a session of its own (``setsid``) and its xinit, nxagent and X
    clients are in it; a VMA killed outright (a hard stop, fencing) leaves them
    running.  The kernel keeps a session's id from being reused while members
    remain, so the recorded pid still names that session.  An nxagent killed
    leaves its X lock file, which would keep every later VM off that display.
    """
    try:
        with open(state_file, encoding="utf-8") as f:
            record = json.load(f)
        leader, display = int(record["pid"]), int(record["display"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == leader:
                members.append(process)
        except OSError:
            pass
    kill_all(members)
    try:
        with open(X_LOCK.format(display), encoding="ascii") as f:
            holder = psutil.Process(int(f.read().strip() or 0))
        if _alive(holder):
            return
    except (OSError, ValueError, psutil.Error):
        pass
    for path in (X_LOCK.format(display), X_SOCKET.format(display)):
        _unlink(path)


def kill_all(processes: list[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL them and wait until they are dead: zombies count, since reaping them is
    their parent's business (or init's, which may take a while)."""
    for process in processes:
        _send(process, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _escape(value: str) -> str:
    """A value as node.conf syntax reads it back unchanged."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")
