"""dnsmasq for the VMs of this node (QVD 4's DHCPDHandler, reference §5.4).

One ``mac,ip`` line per VM of this node in ``internal.vm.network.dhcp-hostsfile``,
rewritten and announced with SIGHUP at every change; dnsmasq hands out only those
static leases on ``vm.network.bridge``, with the gateway as router and
``vm.network.dns_server`` as DNS server (without it, dnsmasq answers DNS itself, as
in QVD 4).  It is restarted ``internal.hkd.agent.dhcpdhandler.delay`` seconds after it
dies, and a dnsmasq an earlier HKD left (its pid file) is ended first.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any, Generator, Optional

import psutil
from twisted.internet import defer, protocol, threads
from twisted.internet.error import ProcessExitedAlready
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.config import Config
from qvd import files
from qvd.stream.once import Once
from qvd.hkd.virt.network import NetworkPlan

log = Logger()

# Seconds an earlier HKD's dnsmasq, or ours at stop, gets to end after SIGTERM.
STOP_WAIT = 5.0


@dataclass(frozen=True)
class DHCPSettings:
    command: str
    hostsfile: str
    pidfile: str
    leasefile: str
    logfile: str
    restart_delay: float

    @classmethod
    def from_config(cls, config: Config) -> "DHCPSettings":
        run = config.get("path.run")
        return cls(config.get("command.dhcpd"), config.get("internal.vm.network.dhcp-hostsfile"),
                   os.path.join(run, "dnsmasq.pid"), os.path.join(run, "dnsmasq.leases"),
                   os.path.join(config.get("path.log"), "qvd-dnsmasq.log"),
                   config.get_float("internal.hkd.agent.dhcpdhandler.delay"))


def dnsmasq_argv(settings: DHCPSettings, plan: NetworkPlan) -> list[str]:
    """QVD 4's dnsmasq command line, with our own pid, lease and configuration files."""
    bridge = plan.bridge
    argv = [settings.command, "-k", "--log-dhcp", "--log-facility=-", "--conf-file=/dev/null",
            "--bind-interfaces", f"--interface={bridge}", "--except-interface=lo",
            f"--dhcp-range=interface:{bridge},{plan.start},static",
            f"--dhcp-option=option:router,{plan.gateway}",
            f"--dhcp-hostsfile={settings.hostsfile}", "-X", "50000",
            f"--pid-file={settings.pidfile}", f"--dhcp-leasefile={settings.leasefile}"]
    if plan.dns_server:
        argv += ["--port=0", f"--dhcp-option=option:dns-server,{plan.dns_server}"]
    if plan.domain:
        argv.append(f"--domain={plan.domain}")
    return argv


def hosts_text(leases: dict[str, str]) -> str:
    """The hosts file: ``mac,ip`` per VM, sorted by MAC."""
    return "".join(f"{mac},{ip}\n" for mac, ip in sorted(leases.items()))


class _Dnsmasq(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended = Once()

    def processEnded(self, reason: Failure) -> None:
        self.ended.fire()


class DHCPServer:
    def __init__(self, reactor: Any, plan: NetworkPlan, settings: DHCPSettings):
        self.reactor = reactor
        self.plan = plan
        self.settings = settings
        self.leases: dict[str, str] = {}  # mac -> ip
        self._process: Optional[_Dnsmasq] = None
        self._running = False
        self._restart: Any = None
        self._writing = defer.DeferredLock()

    @defer.inlineCallbacks
    def start(self) -> Generator[defer.Deferred[Any], Any, None]:
        self._running = True
        yield threads.deferToThread(_end_earlier, self.settings.pidfile)
        for path in (self.settings.logfile, self.settings.pidfile):
            yield threads.deferToThread(os.makedirs, os.path.dirname(path), exist_ok=True)
        yield self._write()
        self._spawn()

    @defer.inlineCallbacks
    def stop(self) -> Generator[defer.Deferred[Any], Any, None]:
        self._running = False
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        process = self._process
        if process is not None and not process.ended.happened:
            process.transport.signalProcess("TERM")
            try:
                yield process.ended.wait().addTimeout(STOP_WAIT, self.reactor)
            except defer.TimeoutError:
                _signal(process, "KILL")

    @defer.inlineCallbacks
    def register(self, mac: str, ip: str) -> Generator[defer.Deferred[Any], Any, None]:
        if self.leases.get(mac) != ip:
            self.leases[mac] = ip
            yield self._changed()

    @defer.inlineCallbacks
    def unregister(self, mac: str) -> Generator[defer.Deferred[Any], Any, None]:
        if self.leases.pop(mac, None) is not None:
            yield self._changed()

    @defer.inlineCallbacks
    def _changed(self) -> Generator[defer.Deferred[Any], Any, None]:
        yield self._write()
        if self._process is not None and not self._process.ended.happened:
            _signal(self._process, "HUP")

    def _write(self) -> defer.Deferred[None]:
        text = hosts_text(self.leases)
        return self._writing.run(threads.deferToThread, _write_hosts, self.settings.hostsfile,
                                 text)

    def _spawn(self) -> None:
        process = self._process = _Dnsmasq()
        argv = dnsmasq_argv(self.settings, self.plan)
        null = os.open(os.devnull, os.O_RDWR)
        try:
            out = os.open(self.settings.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:
            out = os.dup(null)
        try:
            self.reactor.spawnProcess(process, argv[0], argv, env={"PATH": os.defpath},
                                      childFDs={0: null, 1: out, 2: out})
        finally:
            os.close(out)
            os.close(null)
        log.info("dnsmasq started on {bridge}", bridge=self.plan.bridge)
        process.ended.wait().addCallback(lambda _: self._ended(process))

    def _ended(self, process: _Dnsmasq) -> None:
        if self._running and process is self._process:
            delay = self.settings.restart_delay
            log.warn("dnsmasq exited; restarting it in {delay} s (see {log})", delay=delay,
                     log=self.settings.logfile)
            self._restart = self.reactor.callLater(delay, self._spawn)


def _signal(process: _Dnsmasq, name: str) -> None:
    try:
        process.transport.signalProcess(name)
    except ProcessExitedAlready:
        pass


def _write_hosts(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.replace(path, text, 0o644)  # dnsmasq reads it after dropping root


def _end_earlier(pidfile: str) -> None:
    """End the dnsmasq an earlier HKD of this node started (it holds the bridge's port)."""
    try:
        with open(pidfile, encoding="ascii") as f:
            process = psutil.Process(int(f.read().strip()))
        if process.name() != "dnsmasq":
            return
        process.send_signal(signal.SIGTERM)
        process.wait(STOP_WAIT)
    except psutil.TimeoutExpired:
        process.kill()
    except (OSError, ValueError, psutil.Error):
        pass
