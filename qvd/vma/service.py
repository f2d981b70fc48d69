"""``twistd qvd-vma``: the RPC listener and the X session as one service."""

from __future__ import annotations

import os
from typing import Optional

from twisted.application import service
from twisted.internet import interfaces
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.logger import ILogObserver, Logger
from twisted.python import usage

from qvd import logs
from qvd.config import Config, ConfigError
from qvd.http.server import QVDHTTPServerFactory
from qvd.http.simplerpc import SimpleRPCHandler
from qvd.vma import spawn
from qvd.vma.hooks import Hooks
from qvd.vma.rpc import VMAMethods
from qvd.vma.session import XSession
from qvd.vma.settings import VMASettings

DEFAULT_CONFIG = "/etc/qvd/vma.conf"


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, f"vma.conf to read (default {DEFAULT_CONFIG} if it exists)"],
    ]


class VMAService(service.Service):
    log = Logger()

    def __init__(self, settings: VMASettings, reactor):
        self.settings = settings
        self.reactor = reactor
        self.hooks = Hooks(reactor, settings)
        self.session = XSession(reactor, settings, self.hooks)
        methods = VMAMethods(self.session, self.hooks, reactor, self.power_off)
        self.factory = QVDHTTPServerFactory(SimpleRPCHandler(methods.methods()), reactor)
        self.port: Optional[interfaces.IListeningPort] = None
        self.log_observer: Optional[ILogObserver] = None  # what twistd logs to

    def setServiceParent(self, parent) -> None:
        super().setServiceParent(parent)
        logs.offer(parent, self.log_observer)

    def startService(self) -> None:
        for directory in {self.settings.run_dir, self.settings.log_dir}:
            os.makedirs(directory, exist_ok=True)
        self.session.files.delete()
        self.session.channels.start()
        if self.settings.provisioning and os.geteuid() != 0:
            self.log.warn("not root: sessions run as this VMA's user, no account is provisioned")
        self.port = self.reactor.listenTCP(
            self.settings.port, self.factory, interface=self.settings.address
        )
        self.log.info(
            "VMA listening on port {port}, X display :{display} (NX port {nx_port})",
            port=self.port.getHost().port,
            display=self.settings.display,
            nx_port=self.settings.nx_port,
        )
        super().startService()

    def stopService(self):
        super().stopService()
        stops = [self.session.shutdown().addCallback(lambda _: self.session.channels.stop())]
        if self.port is not None:
            stops.append(self.port.stopListening())
        return DeferredList(stops)

    @inlineCallbacks
    def power_off(self):
        """After the poweroff RPC: end the session, then the configured command or just exit."""
        yield self.session.shutdown()
        command = self.settings.poweroff_command
        if command:
            yield spawn.run(self.reactor, command, self.settings.hooks_log)
        else:
            self.reactor.stop()


def load_config(path: Optional[str]) -> Config:
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    return Config.load(path) if path else Config({}, None)


def makeService(options: Options) -> VMAService:
    """Called by twistd (see twisted/plugins/qvd_services.py); logs where vma.conf's
    ``log.*`` keys say, as QVD 4's VMA does (``qvd.logs``)."""
    from twisted.internet import reactor

    try:
        config = load_config(options["config"])
        service = VMAService(VMASettings.from_config(config), reactor)
        service.log_observer = logs.observer(config, logs.twistd_options(options))
    except ConfigError as e:
        raise SystemExit(f"qvd-vma cannot start: {e}") from None
    return service
