"""This machine's side of the session's channels: printing, sound, the slave channel.

nxproxy gets ``cups=<port>`` (``client.printing.enable``; the CUPS of
``CUPS_SERVER`` when that is a local TCP address, else 631), ``media=<port>``
(``client.audio.enable``: ``qvd.client.audio``) and ``slave=<port>``
(``client.slave.enable``).  Once the desktop's first X connection is up, the
shared folders and USB devices are offered to the VM; the VM's own slave
requests are served here (``qvd.client.slave``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Generator, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger

from qvd.client.audio import LocalSound
from qvd.client.session import slave_port
from qvd.client.settings import Settings
from qvd.client.shares import SharedFolders
from qvd.client.slave import ClientSlaveEndpoints, ClientSlaveServer
from qvd.client.usb import UsbForwarding

log = Logger()

CUPS_PORT = 631
_LOCAL = re.compile(r"(?:localhost|127\.0\.0\.1|\[::1\]):(\d+)", re.ASCII)
# the desktop's first X connection is up: a slave channel opened before it takes the
# channel nxagent wants for its display, and the session aborts
_SESSION_UP = "Info: Established X server connection"


def cups_port(env: Mapping[str, str] = os.environ) -> int:
    """Where this machine's CUPS listens: ``CUPS_SERVER`` if it is ``localhost:<port>``."""
    match = _LOCAL.fullmatch(env.get("CUPS_SERVER", "").strip())
    return int(match.group(1)) if match else CUPS_PORT


class LocalChannels:
    def __init__(self, reactor: Any, settings: Settings, key: str):
        self.reactor = reactor
        self.settings = settings
        self.key = key
        self.sound = LocalSound(settings.pactl)
        self.shares = SharedFolders(reactor, settings.shares, settings.sftp_server)
        self.usb = UsbForwarding(reactor, settings.usb)
        self.server = ClientSlaveServer(reactor, ClientSlaveEndpoints(
            reactor, settings.open_command, lambda: self.shares.tickets))
        self.slave_port: Optional[int] = None
        self._offered = False

    @defer.inlineCallbacks
    def prepare(self) -> Generator[Any, Any, tuple[list[str], dict[str, str]]]:
        """nxproxy's channel options and environment."""
        s = self.settings
        options, env = [], {}
        if s.printing:
            options.append(f"cups={cups_port()}")
        if s.audio:
            port = yield self.sound.start()
            if port is not None:
                options.append(f"media={port}")
        if s.slave:
            self.slave_port = slave_port()
            if self.slave_port is not None:
                options.append(f"slave={self.slave_port}")
            command = s.slave_command or self.server.start(self.key)
            env["NX_SLAVE_CMD"] = env["QVD_SLAVE_CMD"] = command
        return options, env

    def nxproxy_line(self, line: str) -> None:
        """Once the desktop is up: offer the folders and devices."""
        if _SESSION_UP in line and self.slave_port is not None and not self._offered:
            self._offered = True
            self.shares.start(self.slave_port, self.key)
            self.usb.start(self.slave_port, self.key)

    @defer.inlineCallbacks
    def close(self) -> Generator[Any, Any, None]:
        self.shares.stop()
        yield self.server.stop()
        yield self.sound.stop()
