"""The client side of the L7R conversation (reference §1.4, §2).

All requests of a run go over one connection, as the QVD clients do
(list_of_vm, then stop_vm or connect_to_vm), so the server's
per-connection authentication cache applies.  Heads are read with the
project's bounded parser; every ``102`` is reported as it arrives; after
``101`` the raw stream, starting with any bytes read past the head, goes to
another protocol.
"""

from __future__ import annotations

import base64
import json
import platform
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence
from urllib.parse import quote

from twisted.internet import interfaces, ssl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from qvd.client.settings import Settings
from qvd.http.handover import HandoverProtocol
from qvd.http.head import VERSION, HeadError, HeadParser, Headers, format_head

USER_AGENT = f"QVD::HTTPC/0.01 ({platform.system()}) qvd-client"
UPGRADE = [("Connection", "Upgrade"), ("Upgrade", "QVD/1.0")]


class ProtocolError(Exception):
    """The server's answer is not QVD's HTTP dialect."""


class ConnectionClosed(Exception):
    """The server closed the connection before answering."""


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ProtocolError(f"{self.status} reply is not JSON: {self.text[:200]!r}") from None


def query(pairs: list[tuple[str, str]]) -> str:
    """``k=v&...`` with everything but unreserved characters escaped (RFC 3986)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


class L7RProtocol(HandoverProtocol):
    """Sequential GETs on one connection; ``on_info`` hears each ``X-QVD-VM-Info``."""

    def __init__(self, on_info: Callable[[str], None]):
        self.on_info = on_info
        self._parser = HeadParser()
        self._pending: Optional[Deferred[Reply]] = None
        self._head: Optional[tuple[int, Headers]] = None
        self._length = 0

    def request(self, target: str, headers: list[tuple[str, str]],
                method: str = "GET") -> Deferred[Reply]:
        """``method`` ``target``; fires with the final (non-102) reply, ``101`` included."""
        assert self._pending is None, "one request at a time"
        self._pending = Deferred()
        self.transport.write(format_head(f"{method} {target} {VERSION}",
                                         headers + [("User-Agent", USER_AGENT)]))
        return self._pending

    def switch(self, protocol: interfaces.IProtocol) -> None:
        """After ``101``: hand the raw stream, bytes already read first, to ``protocol``."""
        self.hand_over(self._parser, protocol)

    def dataReceived(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw.dataReceived(data)
            return
        self._parser.buffer += data
        try:
            self._process()
        except (HeadError, ProtocolError) as e:
            self._fail(Failure(ProtocolError(str(e))))
            self.transport.loseConnection()

    def _process(self) -> None:
        while self._pending is not None:
            if self._head is None:
                head = self._parser.feed(b"")
                if head is None:
                    return
                status = self._status(head.start_line)
                if status == 101:
                    self._finish(Reply(101, head.headers, b""))
                    return
                if 100 <= status < 200:
                    info = head.headers.get("X-QVD-VM-Info")
                    if info is not None:
                        self.on_info(info)
                    continue
                length = head.headers.get("Content-Length") or "0"
                if not length.isdigit():
                    raise ProtocolError(f"bad Content-Length {length!r}")
                self._head, self._length = (status, head.headers), int(length)
            if len(self._parser.buffer) < self._length:
                return
            status, headers = self._head
            body = self._parser.buffer[: self._length]
            self._parser.buffer = self._parser.buffer[self._length:]
            self._head = None
            self._finish(Reply(status, headers, body))

    @staticmethod
    def _status(start_line: str) -> int:
        parts = start_line.split(None, 2)
        if len(parts) < 2 or parts[0] != VERSION or not parts[1].isdigit():
            raise ProtocolError(f"not a QVD status line: {start_line[:100]!r}")
        return int(parts[1])

    def _finish(self, reply: Reply) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        pending.callback(reply)

    def _fail(self, failure: Failure) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.errback(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._raw is not None:
            self._raw.connectionLost(reason)
        elif reason.check(ConnectionDone):
            self._fail(Failure(ConnectionClosed("the server closed the connection")))
        else:
            self._fail(reason)


def tls_options(settings: Settings) -> Any:
    """Verification on unless ``insecure``: against ``ca_file`` or the system's CAs."""
    client_cert = None
    if settings.cert_file and settings.key_file:
        with open(settings.cert_file, "rb") as cert, open(settings.key_file, "rb") as key:
            client_cert = ssl.PrivateCertificate.loadPEM(cert.read() + b"\n" + key.read())
    if settings.insecure:
        return client_cert.options() if client_cert else ssl.CertificateOptions()
    trust: Any = ssl.platformTrust()
    if settings.ca_file:
        with open(settings.ca_file, "rb") as f:
            pem = f.read()
        blocks = [b + b"-----END CERTIFICATE-----\n"
                  for b in pem.split(b"-----END CERTIFICATE-----")[:-1]]
        trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])
    return ssl.optionsForClientTLS(settings.host, trustRoot=trust, clientCertificate=client_cert)


class L7RSession:
    """An open connection to the L7R, with the credentials of this run."""

    def __init__(self, protocol: L7RProtocol, settings: Settings):
        self.protocol = protocol
        self.settings = settings

    def authorization(self) -> list[tuple[str, str]]:
        s = self.settings
        if s.token:
            return [("Authorization", f"Bearer {s.token.strip()}")]
        pair = f"{s.user}:{s.password or ''}".encode("utf-8")
        return [("Authorization", "Basic " + base64.b64encode(pair).decode("ascii"))]

    def get(self, path: str, params: Sequence[tuple[str, str]] = (),
            upgrade: bool = False) -> Deferred[Reply]:
        target = f"{path}?{query(list(params))}" if params else path
        return self.protocol.request(target, self.authorization() + (UPGRADE if upgrade else []))

    def list_of_vm(self) -> Deferred[Reply]:
        return self.get("/qvd/list_of_vm")

    def create_auth_token(self) -> Deferred[Reply]:
        return self.get("/qvd/create_auth_token")

    def stop_vm(self, vm_id: int) -> Deferred[Reply]:
        return self.get("/qvd/stop_vm", [("id", str(vm_id))], upgrade=True)

    def connect_to_vm(self, vm_id: int) -> Deferred[Reply]:
        params = [("id", str(vm_id))] + self.settings.client_params()
        return self.get("/qvd/connect_to_vm", params, upgrade=True)

    def close(self) -> None:
        self.protocol.transport.loseConnection()


def open_session(reactor: Any, settings: Settings, on_info: Callable[[str], None],
                 timeout: float = 30) -> Deferred[L7RSession]:
    """A TCP (and TLS unless ``client.use_ssl`` = 0) connection to the L7R."""
    endpoint: Any = HostnameEndpoint(reactor, settings.host, settings.port, timeout=timeout)
    if settings.use_ssl:
        endpoint = wrapClientTLS(tls_options(settings), endpoint)
    protocol = L7RProtocol(on_info)
    d = connectProtocol(endpoint, protocol)
    d.addCallback(lambda _: L7RSession(protocol, settings))
    return d
