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
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

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
from qvd.hkd import addresses, displays, netns, vmaconf
from qvd.files import replace as replace_file, unlink
from qvd.hkd.hypervisor import IHypervisor, IVMInstance, LaunchError
from qvd.hkd.layout import VMFiles
from qvd.stream.once import Once
from qvd.stream.sockets import free_port

log = Logger()

TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def _ports(vma_port: int, display: int) -> dict[str, int]:
    """vm_runtimes' ports: nxagent's is 4000 + display; no ssh, VNC, serial or monitor."""
    return {"vma": vma_port, "x": displays.nx_port(display), "ssh": 0, "vnc": 0, "serial": 0,
            "mon": 0}


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
class ProcessSettings:
    """What starting one process VM needs from the configuration, read in the reactor
    thread (the configuration is not thread-safe) for the file work in a thread."""

    files: VMFiles
    homes: str
    address: str
    namespace: Optional[str]
    port: int  # 0: any free port
    account: str
    display_base: int
    display_span: int
    passed: Mapping[str, str]

    @classmethod
    def from_config(cls, config: Config, vm_id: int,
                    net: Optional[netns.VMNetwork]) -> "ProcessSettings":
        get = config.get
        return cls(
            files=VMFiles.under(get("path.storage.process"), str(vm_id)),
            homes=get("path.storage.homes"),
            address=net.address if net else get("vm.process.address").strip(),
            namespace=net.name if net else None,
            port=config.get_int("internal.vm.port.vma") if net else 0,
            account=get("vm.process.account").strip(),
            display_base=config.get_int("internal.hkd.process.display.base"),
            display_span=config.get_int("internal.hkd.process.display.span"),
            passed=vmaconf.passed(config.effective()),
        )


@dataclass(frozen=True)
class _Layout:
    """A prepared process VM: its files, address, RPC port and display."""

    files: VMFiles
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
        self._addresses: dict[int, str] = {}  # VMs in namespaces, from vm.process.ip.range

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    # -- launch ---------------------------------------------------------------------
    @defer.inlineCallbacks
    def launch(self, spec: VMSpec) -> Any:
        net = netns.plan(self.config, spec.vm_id, self._address(spec))
        if net is not None:
            self._addresses[spec.vm_id] = net.address
        settings = ProcessSettings.from_config(self.config, spec.vm_id, net)
        yield self._lock.acquire()
        try:
            layout = yield threads.deferToThread(
                _prepare, spec.vm_id, settings, set(self._displays.values()))
            self._displays[spec.vm_id] = layout.display
        except (OSError, ValueError) as e:
            raise LaunchError(f"cannot prepare {settings.files.directory}: {e}") from e
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

    @defer.inlineCallbacks
    def _spawn(self, layout: _Layout, prefix: list[str]) -> Any:
        files = layout.files
        argv = prefix + [
            self._setsid, sys.executable, "-c", TWISTD, "--nodaemon",
            f"--pidfile={files.pid}", f"--logfile={files.logfile}",
            "qvd-vma", "--config", files.conf]
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy")}
        output, null = yield threads.deferToThread(_open_output, files.out)
        vm = _SpawnedVM(layout)
        try:
            transport = self.reactor.spawnProcess(
                vm, argv[0], argv, env=env, path=files.directory,
                childFDs={0: null, 1: output, 2: output})
        finally:
            os.close(output)
            os.close(null)
        vm.pid = transport.pid
        try:
            yield threads.deferToThread(self._save, layout, transport.pid)
        except psutil.NoSuchProcess:
            raise LaunchError(f"qvd-vma exited at once; see {layout.files.out}") from None
        return vm

    @staticmethod
    def _save(layout: _Layout, pid: int) -> None:
        files = layout.files
        record = Record(int(os.path.basename(files.directory)), pid,
                        psutil.Process(pid).create_time(), layout.address, layout.vma_port,
                        layout.display, files.conf, layout.namespace)
        replace_file(files.state, json.dumps(asdict(record)))

    # -- adopt / release -------------------------------------------------------------
    @defer.inlineCallbacks
    def adopt(self, vm_id: int) -> Any:
        found = yield threads.deferToThread(_find, self._files(vm_id))
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
        state = self._files(vm_id).state
        yield threads.deferToThread(end_session, state)
        if netns.enabled(self.config):
            yield self._namespaces.remove(netns.namespace(self.config, vm_id))
        yield threads.deferToThread(unlink, state)

    def _files(self, vm_id: int) -> VMFiles:
        return VMFiles.under(self.config.get("path.storage.process"), str(vm_id))


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
        files = VMFiles.under(root, name)
        found = _find(files)
        if found is None:
            unlink(files.state)
        else:
            _send(found[1], signal.SIGKILL)
            reaped.append(int(name))
    return reaped


def _prepare(vm_id: int, settings: ProcessSettings, taken: set[int]) -> _Layout:
    """Directories, ports and vma.conf of one VM (in a thread: file work)."""
    account = _account(settings.account)
    files = settings.files
    for path in (files.directory, settings.homes):
        os.makedirs(path, mode=0o755, exist_ok=True)
    address = settings.address
    display = displays.choose(vm_id, None if settings.namespace else address, taken,
                              settings.display_base, settings.display_span)
    port = settings.port or free_port(address)
    overrides = vmaconf.for_process(
        run=files.run, log=files.log, address=address, port=port, display=display,
        account=account, home=os.path.join(settings.homes, str(vm_id)))
    replace_file(files.conf, vmaconf.render(vm_id, settings.passed, overrides))
    return _Layout(files, address, port, display, settings.namespace)


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


def _open_output(path: str) -> tuple[int, int]:
    output = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return output, os.open(os.devnull, os.O_RDONLY)


def _find(files: VMFiles) -> Optional[tuple[Record, psutil.Process]]:
    """The recorded VMA if that pid still is it (same start, same config, not a zombie)."""
    try:
        with open(files.state, encoding="utf-8") as f:
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
        with open(displays.X_LOCK.format(display), encoding="ascii") as f:
            holder = psutil.Process(int(f.read().strip() or 0))
        if _alive(holder):
            return
    except (OSError, ValueError, psutil.Error):
        pass
    for path in (displays.X_LOCK.format(display), displays.X_SOCKET.format(display)):
        unlink(path)


def kill_all(processes: list[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL them and wait until they are dead: zombies count, since reaping them is
    their parent's business (or init's, which may take a while)."""
    for process in processes:
        _send(process, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)
