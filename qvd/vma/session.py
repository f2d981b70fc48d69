"""The X session: xinit + nxagent, its state, and the x_* operations.

The session state is what nxagent prints (reference §4.6), written through
to the state file; ``x_state`` maps it (§3.3) and enforces the state
timeouts.  xinit is our child, so its exit is seen directly: the files are
deleted and the session is ``stopped`` (the VM itself keeps running).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from typing import Mapping, Optional

from twisted.internet import interfaces
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.http.simplerpc import RPCError
from qvd.stream.lines import LineSplitter
from qvd.vma import nxoptions, spawn
from qvd.vma.channels import SessionChannels
from qvd.vma.hooks import Hooks
from qvd.vma.provisioning import Provisioner, SessionAccount
from qvd.vma.settings import VMASettings
from qvd.vma.state import LIVE, TIMEOUT_KEYS, StateFiles, x_state

_PID = re.compile(r"Info: Agent running with pid '(\d+)'")
_STATE_WORD = re.compile(r"Session: (Starting|Suspending|Resuming|Terminating|Aborting) session at")
_STATE_DONE = re.compile(r"Session: Session (started|suspended|resumed|terminated|aborted) at")
RESUME_ATTEMPTS = 5
RESUME_INTERVAL = 1.0
_TIMEZONE = re.compile(r"[A-Za-z][\w/+-]*", re.ASCII)
_ENV_FILES = ("/etc/locale.conf", "/etc/default/locale", "/etc/environment")


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: Optional[int], sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _env_file(path: str) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    values[key.strip()] = value.strip().strip("'\"")
    except OSError:
        pass
    return values


class _XinitProtocol(ProcessProtocol):
    """Feeds xinit/nxagent output lines to the session, and reports the exit."""

    def __init__(self, session: "XSession", log_file):
        self.session = session
        self.log_file = log_file
        self.exited: Deferred = Deferred()
        self._lines = {1: LineSplitter(), 2: LineSplitter()}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.log_file.write(data)
        self.log_file.flush()
        for line in self._lines[fd].feed(data):
            self.session.output_line(self, line.decode("utf-8", "replace").rstrip("\r"))

    def processExited(self, reason: Failure) -> None:
        self.log_file.write(f"{spawn.stamp()} X session ended: {reason.getErrorMessage()}\n".encode())
        self.log_file.flush()
        self.session.exited(self)
        self.exited.callback(None)

    def processEnded(self, reason: Failure) -> None:
        """The log closes only once every pipe has: nxagent, a child of xinit, may still be
        writing its last words after xinit itself has exited."""
        self.log_file.close()


class XSession:
    log = Logger()

    def __init__(
        self,
        reactor: interfaces.IReactorProcess,
        settings: VMASettings,
        hooks: Hooks,
        clock: Optional[interfaces.IReactorTime] = None,
    ):
        self.reactor = reactor
        self.clock = clock or reactor
        self.settings = settings
        self.hooks = hooks
        self.provisioner = Provisioner(reactor, settings, hooks)
        self.files = StateFiles(settings.state_path, settings.pid_path)
        self.channels = SessionChannels(reactor, settings)
        self._lock = DeferredLock()
        self._xinit: Optional[_XinitProtocol] = None
        self._hooked_state = "stopped"
        self._resume_call: Optional[IDelayedCall] = None

    # -- state ---------------------------------------------------------------
    def _write_state(self, raw: str) -> None:
        self.files.write_state(raw, self.clock.seconds())
        self.channels.state_changed(raw)
        if raw != "provisioning":
            self._state_hook(x_state(raw))

    def _clear(self) -> None:
        """The session is over: no files, and no xinit left waiting for its server."""
        self._signal_xinit(signal.SIGTERM)
        self.files.delete()
        self.channels.ended()
        self._state_hook("stopped")

    def _state_hook(self, state: str) -> None:
        """State hooks run on changes of the mapped state (nxagent repeats lines)."""
        if state != self._hooked_state:
            self._hooked_state = state
            self.hooks.state(state)

    def _signal_session(self, sig: int) -> None:
        """Signal nxagent, or xinit while nxagent's pid is not known yet."""
        pid = self.files.read_pid()
        if pid:
            _signal(pid, sig)
        else:
            self._signal_xinit(sig)

    def _signal_xinit(self, sig: int) -> None:
        if self._xinit is not None:
            try:
                self._xinit.transport.signalProcess(sig)
            except ProcessExitedAlready:
                pass

    def _terminate(self, sig: int = signal.SIGTERM) -> None:
        """End the session.  xinit is signalled too: it would otherwise wait for
        an nxagent that died before its first proxy connection for 15 s more."""
        self._signal_session(sig)
        self._signal_xinit(sig)

    def x_state(self) -> str:
        raw = self.files.read_state()
        state = x_state(raw.state)
        key = TIMEOUT_KEYS.get(state)
        if key and self.clock.seconds() - raw.timestamp > self.settings.timeouts[key]:
            if state == "stopping":
                self.log.warn("nxagent did not stop in time: killing it")
                self._terminate(signal.SIGKILL)
            else:
                self.log.warn("x_state {state} timed out: terminating nxagent", state=state)
                self._stop_session()
            return "stopping"
        if state in LIVE and not _alive(self.files.read_pid()):
            state = "stopped"
        if state == "stopped" and raw.state:
            self._clear()
        return state

    # -- nxagent output ------------------------------------------------------
    def output_line(self, xinit: "_XinitProtocol", line: str) -> None:
        if xinit is not self._xinit or self.channels.output_line(line):
            return
        match = _PID.match(line)
        if match:
            self.files.write_pid(int(match.group(1)))
            return
        match = _STATE_WORD.match(line) or _STATE_DONE.match(line)
        if match:
            self._write_state(match.group(1).lower())

    def exited(self, xinit: _XinitProtocol) -> None:
        if xinit is self._xinit:
            self._xinit = None
            self._clear()

    # -- operations ----------------------------------------------------------
    def x_start(self, pairs: list[tuple[str, Optional[str]]]) -> Deferred:
        return self._lock.run(self._x_start, dict(pairs))

    @inlineCallbacks
    def _x_start(self, params: dict):
        options = nxoptions.build_options(params, self.settings)
        self.provisioner.apply_defaults(params)
        state = self.x_state()
        if state == "connected":
            self._signal_session(signal.SIGHUP)
            raise RPCError("Can't connect to X session in state connected, suspending it, retry later\n")
        if state not in ("stopped", "suspended"):
            raise RPCError(
                f"Unable to start/resume X session in state {state}, try again in a few minutes\n"
            )
        yield self.hooks.action("pre-connect", state, params.items())
        self.channels.session_params(params)
        yield self._set_timezone(params.get("qvd.client.timezone") or "")
        self._write_state("initiating")
        if state == "stopped":
            self._launch(params, options)
        else:
            self._write_options(options)
            self._resume()
            yield self.hooks.action("connect", "starting", params.items())
        return "starting"

    def _resume(self, attempts: int = RESUME_ATTEMPTS) -> None:
        """SIGHUP a suspended nxagent until it reports resuming.

        nxagent loses a SIGHUP that arrives while it finishes a suspension (it
        then acts on it only at its next 20 s wake-up); more SIGHUPs before it
        reacted are harmless, so nudge it every second for a few seconds."""
        self._resume_call = None
        if self._xinit is None or self.files.read_state().state != "initiating":
            return
        self._signal_session(signal.SIGHUP)
        if attempts > 1:
            self._resume_call = self.clock.callLater(RESUME_INTERVAL, self._resume, attempts - 1)

    @inlineCallbacks
    def _set_timezone(self, zone: str):
        """A VM of its own follows the client's time zone; failures are only logged.
        VMs sharing the node (no provisioning) never change the node's zone."""
        if not self.provisioner.provisions or not _TIMEZONE.fullmatch(zone):
            return
        argv = [self.settings.commands["timedatectl"], "set-timezone", zone]
        try:
            code = yield spawn.run(self.reactor, argv, self.settings.hooks_log)
        except OSError as e:
            code = str(e)
        if code:
            self.log.warn("could not set the time zone to {zone}: {code}", zone=zone, code=code)

    def _write_options(self, options: list[tuple[str, str]]) -> None:
        with open(self.settings.options_path, "w") as f:
            f.write(nxoptions.options_line(options, self.settings.display))

    def _launch(self, params: dict, options: list[tuple[str, str]]) -> None:
        d = self.provisioner.account(params, lambda: self._write_state("provisioning"))
        d.addCallback(self._connect_hook, params)
        d.addCallback(self._spawn, options)
        d.addErrback(self._launch_failed)

    def _connect_hook(self, account: SessionAccount, params: dict) -> Deferred:
        d = self.hooks.action("connect", self.x_state(), params.items())
        return d.addCallback(lambda _: account)

    def _launch_failed(self, failure: Failure) -> None:
        self.log.failure("X session launch failed", failure)
        spawn.log_line(self.settings.nxagent_log, f"X session launch failed: {failure.getErrorMessage()}")
        self._clear()

    def _spawn(self, account: SessionAccount, options: list[tuple[str, str]]) -> None:
        s = self.settings
        self._write_options(options)
        env = self._environment(account)
        display = f":{s.display}"
        argv = [
            _which(s.xinit, env),
            _which(s.x_session, env),
            *s.x_session_extra,
            "--",
            _which(s.nxagent, env),
            display,
            "-ac",
            "-name",
            "QVD",
            "-display",
            f"nx/nx,options={s.options_path}{display}",
            *s.nxagent_extra,
        ]
        log_file = open(s.nxagent_log, "ab")
        log_file.write(f"{spawn.stamp()} starting X session as {account.name}: {' '.join(argv)}\n".encode())
        log_file.flush()
        xinit = _XinitProtocol(self, log_file)
        self._xinit = xinit
        umask = os.umask(s.umask)  # inherited by the session; the reactor thread is ours
        try:
            self.reactor.spawnProcess(
                xinit, argv[0], argv, env=env, path=account.home, uid=account.uid, gid=account.gid
            )
        except BaseException:
            self._xinit = None
            log_file.close()
            raise
        finally:
            os.umask(umask)
        xinit.transport.closeStdin()
        self.channels.launched(account, env)

    def _environment(self, account: SessionAccount) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": account.home,
            "USER": account.name,
            "LOGNAME": account.name,
            "MAIL": f"/var/mail/{account.name}",
            "SHELL": self.settings.shell,
            "NX_CLIENT": self.settings.nxdiag,
            **self.channels.environment(),
        }
        for path in _ENV_FILES:
            env.update(_env_file(path))
        env.setdefault("LANG", self.settings.lang)
        return env

    def x_suspend(self) -> Deferred:
        return self._lock.run(self._x_suspend)

    @inlineCallbacks
    def _x_suspend(self):
        state = self.x_state()
        if state not in ("listening", "connected") or not self.files.read_pid():
            return state
        yield self.hooks.action("suspend", state)
        self._signal_session(signal.SIGHUP)
        return "suspending"

    def x_stop(self) -> Deferred:
        return self._lock.run(self._x_stop)

    @inlineCallbacks
    def _x_stop(self):
        state = self.x_state()
        if state == "stopped" or not self.files.read_pid():
            return state
        yield self.hooks.action("stop", state)
        self._stop_session()
        return "stopping"

    def _stop_session(self) -> None:
        """nxagent prints nothing when TERMed while connected, so say it ourselves."""
        self._write_state("terminating")
        self._terminate()

    @inlineCallbacks
    def shutdown(self):
        """VMA shutdown: the ``stop`` hook, TERM (KILL after the stopping timeout), files gone."""
        if self._resume_call is not None:
            self._resume_call.cancel()
            self._resume_call = None
        xinit = self._xinit
        if xinit is not None:
            try:
                yield self.hooks.action("stop", self.x_state())
            except RPCError as e:
                self.log.warn("stop hook failed at shutdown: {error}", error=e)
            self._stop_session()
            timer = self.clock.callLater(
                self.settings.timeouts["stopping"], self._terminate, signal.SIGKILL
            )
            yield xinit.exited
            if timer.active():
                timer.cancel()
        self.files.delete()


def _which(command: str, env: Mapping[str, str]) -> str:
    """xinit only takes client/server paths that start with ``/`` or ``.``."""
    if "/" in command:
        return os.path.abspath(command)
    found = shutil.which(command, path=env.get("PATH"))
    if found is None:
        raise RPCError(f"command {command} not found\n")
    return found
