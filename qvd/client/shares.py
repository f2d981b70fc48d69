"""Folders of this machine in the desktop (``--share DIR``, ``client.share.N``).

Once nxproxy listens for slave connections, each folder is offered to the
VM with ``PUT /shares/<path>`` and the slave key (reference §4.8).  On
``101`` the connection becomes SFTP: ``sftp-server -e`` serves the folder
here while sshfs mounts it in the VM at ``~/Redirected/<ticket>``.  A
refusal is one warning; the session goes on.
"""

from __future__ import annotations

import os
from typing import Any, Generator, Optional
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from qvd.client.l7r import ConnectionClosed, L7RProtocol, Reply
from qvd.http.client import quiet_connect
from qvd.slave.bridge import ProcessBridge, Program

log = Logger()

SFTP_UPGRADE = "qvd:sftp/1.0;charset=UTF-8"
TIMEOUT = 30.0


class ShareRefused(Exception):
    def __init__(self, reply: Reply):
        super().__init__(f"{reply.status}: {reply.text or 'refused'}")
        self.reply = reply


def slave_connection(reactor: Any, port: int, timeout: float = TIMEOUT) -> defer.Deferred:
    """A connection to nxproxy's slave port (a channel to the VM's slave server)."""
    protocol = L7RProtocol(lambda info: None)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=timeout)
    return quiet_connect(endpoint, protocol).addCallback(lambda _: protocol)


@defer.inlineCallbacks
def upgrade(reactor: Any, port: int, key: str, method: str, target: str, protocol_name: str,
            timeout: float = TIMEOUT) -> Generator[Any, Any, tuple[L7RProtocol, Reply]]:
    """A slave request that must end in ``101``: (the connection, the reply)."""
    connection = yield slave_connection(reactor, port, timeout)
    headers = [("Authorization", f"Basic {key}"), ("Connection", "Upgrade"),
               ("Upgrade", protocol_name)]
    try:
        reply = yield connection.request(target, headers, method).addTimeout(timeout, reactor)
    except Exception:
        connection.transport.loseConnection()
        raise
    if reply.status != 101:
        connection.transport.loseConnection()
        raise ShareRefused(reply)
    return connection, reply


class SharedFolders:
    """The folders of one session; ``tickets`` maps each mounted one's name in the VM
    to the folder here."""

    def __init__(self, reactor: Any, folders: list[str], sftp_server: str):
        self.reactor = reactor
        self.folders = folders
        self.sftp_server = sftp_server
        self.tickets: dict[str, str] = {}
        self._bridges: list[ProcessBridge] = []

    def start(self, port: int, key: str) -> defer.Deferred:
        return defer.DeferredList([self.share(port, key, folder) for folder in self.folders])

    @defer.inlineCallbacks
    def share(self, port: int, key: str, folder: str) -> Generator[Any, Any, Optional[str]]:
        try:
            connection, reply = yield upgrade(self.reactor, port, key, "PUT",
                                              "/shares" + quote(folder), SFTP_UPGRADE)
        except ShareRefused as e:
            log.warn("The folder {folder} could not be shared: {reason}", folder=folder,
                     reason=e.reply.text or e.reply.status)
            return None
        except (ConnectionClosed, ConnectionLost):
            log.warn("The folder {folder} could not be shared: the virtual machine takes no"
                     " shared folders (its slave channel is off: vma.slave.enable).",
                     folder=folder)
            return None
        except Exception as e:
            log.warn("The folder {folder} could not be shared: {reason}", folder=folder,
                     reason=e)
            return None
        ticket = reply.headers.get("X-QVD-Share-Ticket") or os.path.basename(folder)
        program = Program([self.sftp_server, "-e"], dict(os.environ), folder,
                          name="sftp-server")
        bridge = ProcessBridge(self.reactor, program)
        self._bridges.append(bridge)
        connection.switch(bridge)
        self.tickets[ticket] = folder
        log.info("The folder {folder} is in the desktop as ~/Redirected/{ticket}",
                 folder=folder, ticket=ticket)
        return ticket

    def stop(self) -> None:
        for bridge in self._bridges:
            if bridge.transport is not None:
                bridge.transport.loseConnection()
        self._bridges = []
