"""Shared helpers of the L7R wire tests: an in-process L7R on a real QVD-DB, a raw
client that parses the QVD HTTP dialect itself, and the golden transcripts of
protocols/l7r-http.md.

The in-process L7R is an ``L7RService`` in its ``NodeDaemon`` on a free loopback
port, after ``prepare`` as ``twistd qvd-l7r`` does it.  The node's host
row is made with ``qa`` and its ``host_runtimes.state`` set to ``running``
with SQL, as the HKD's heartbeat would (no HKD runs here).
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import re
import shlex
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from qvd.admin.cli import main as qa_main
from qvd.daemon import NodeDaemon, prepare
from qvd.l7r.service import L7RService
from qvd.l7r.tls import L7RContextFactory
from tests.support.postgres import drop_database, new_database

if TYPE_CHECKING:  # not imported at run time: pytest would try to collect it
    from tests.support.postgres import TestDatabase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENT = os.path.join(ROOT, "protocols", "l7r-http.md")
WAIT = 10.0  # seconds any single expected event may take before a test fails
ALIVE_BODY = b"I am alive!\r\n"

# Conf for an in-process L7R: plain HTTP on a free loopback port.
PLAIN = "l7r.use_ssl = 0\nl7r.address = 127.0.0.1\nl7r.port = 0\n"


# -- the in-process L7R ------------------------------------------------------------------------
@dataclass
class Node:
    """A QVD-DB, the node.conf for it and a started in-process L7R."""

    db: "TestDatabase"
    conf: str
    service: Optional[L7RService] = None

    @property
    def port(self) -> int:
        assert self.service is not None and self.service.port is not None
        return self.service.port.getHost().port

    @property
    def host_id(self) -> int:
        return self.db.query("SELECT id FROM hosts WHERE name = 'test-node'")[0][0]

    def qa(self, line: str) -> str:
        """One ``qa`` command line (shell words), which must succeed; its output."""
        words = shlex.split(line)
        assert words[0] == "qa", line
        out, err = io.StringIO(), io.StringIO()
        code = qa_main(["-c", self.conf] + words[1:], out, err)
        if code != 0:
            raise AssertionError(f"{line!r} failed ({code}): {err.getvalue()}")
        return out.getvalue()

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        return self.db.query(statement, params)

    def counters(self) -> tuple[int, int, int]:
        """(http_requests, auth_attempts, auth_ok) of this node."""
        return self.sql("SELECT http_requests, auth_attempts, auth_ok FROM host_counters"
                        " WHERE host_id = %s", (self.host_id,))[0]


def make_node(testcase: Any, extra_conf: str = "", register: bool = True) -> Node:
    """A fresh QVD-DB and a node.conf for it (the L7R is not started yet); with
    ``register`` the node's host row exists and is ``running``."""
    db = new_database()
    testcase.addCleanup(drop_database, db)
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    node = Node(db, db.write_conf(directory, PLAIN + extra_conf))
    if register:
        node.qa("qa host new name=test-node,address=127.0.0.1")
        node.sql("UPDATE host_runtimes SET state = 'running', ok_ts = now()")
    return node


@defer.inlineCallbacks
def start_l7r(testcase: Any, node: Node,
              tls: bool = False) -> Generator[defer.Deferred[Any], Any, Node]:
    """Start the node's L7R (stopped at cleanup); fires with the node once it listens."""
    config, host_id = prepare(node.conf, "qvd-l7r")
    daemon = NodeDaemon(config, host_id, "qvd-l7r", reactor)
    service = L7RService(daemon, tls=L7RContextFactory(config) if tls else None)
    service.setServiceParent(daemon)
    daemon.startService()
    testcase.addCleanup(daemon.stopService)
    yield daemon.started()
    yield service.ready
    node.service = service
    return node


# -- TLS ---------------------------------------------------------------------------------------
def self_signed(directory: str, key_mode: int = 0o600) -> tuple[str, str]:
    """(cert path, key path) of a fresh self-signed certificate for localhost/127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, key_mode)
    return cert_path, key_path


def tls_conf(cert: str, key: str) -> str:
    return f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n"


def tls_get(port: int, cafile: str, target: str = "/qvd/ping",
            version: Optional[ssl.TLSVersion] = None) -> "Reply":
    """One request over TLS with the stdlib, verifying the server against ``cafile``;
    ``version`` pins the protocol version the client offers.  Blocking: call it in a
    thread when the server runs in this process."""
    context = ssl.create_default_context(cafile=cafile)
    if version is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer ``version``
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: offering it is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\n\r\n".encode("ascii"))
            data = b""
            while (found := split_response(data)) is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise Malformed(f"closed without a reply: {data!r}")
                data += chunk
            return found[0]


# -- the raw client ----------------------------------------------------------------------------
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5]\d\d) ([A-Za-z][A-Za-z -]*)")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.0-9A-Za-z_^`|~]+): (.*)")
FORBIDDEN_HEADERS = {"date", "server", "connection", "transfer-encoding"}


class Malformed(AssertionError):
    """The server sent something that is not a well-formed QVD HTTP response."""


@dataclass
class Reply:
    """One response: its final head, the 1xx heads before it, the body."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    interim: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)


def parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """A response head without its final CRLF CRLF, checked as strictly as clients read it."""
    lines = raw.split(b"\r\n")
    match = STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise Malformed(f"bad status line {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        header = HEADER_LINE.fullmatch(line)
        if header is None or b"\n" in line or b"\r" in line:
            raise Malformed(f"bad header line {line!r}")
        headers.append((header.group(1).decode("ascii"), header.group(2).decode("ascii")))
    names = [name.lower() for name, _ in headers]
    if FORBIDDEN_HEADERS & set(names):
        raise Malformed(f"header the dialect never sends in {headers}")
    status = int(match.group(1))
    if status < 200:
        if "content-length" in names or "content-type" in names:
            raise Malformed(f"a {status} with a body: {headers}")
    elif names[-2:] != ["content-type", "content-length"] or not headers[-1][1].isdigit():
        raise Malformed(f"a {status} must end with Content-Type and Content-Length: {headers}")
    return status, match.group(2).decode("ascii"), headers


def split_response(data: bytes) -> Optional[tuple[Reply, bytes]]:
    """The first complete response (1xx heads included) in ``data`` and what follows it;
    None while incomplete.  After a 101 what follows is the raw stream."""
    interim = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        status, reason, headers = parse_head(data[:end])
        data = data[end + 4:]
        if status == 102:
            interim.append((status, headers))
            continue
        if status == 101:
            return Reply(status, reason, headers, b"", interim), data
        if status < 200:
            raise Malformed(f"unexpected interim status {status}")
        length = int(headers[-1][1])
        if len(data) < length:
            return None
        return Reply(status, reason, headers, data[:length], interim), data[length:]


def parse_responses(data: bytes) -> tuple[list[Reply], bytes]:
    """Every complete response in ``data`` and the incomplete rest."""
    replies = []
    while True:
        found = split_response(data)
        if found is None:
            return replies, data
        reply, data = found
        replies.append(reply)
        if reply.status == 101:
            return replies, data


class RawClient(Protocol):
    """A client socket whose bytes the test reads itself: ``read`` a number of
    bytes, a whole ``response``, or wait until the server ``closed`` it."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._waiting: Optional[tuple[Any, defer.Deferred[Any]]] = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._check()

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed.callback(None)
        self._check()

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> defer.Deferred[None]:
        self.transport.loseConnection()
        return self.closed

    def _check(self) -> None:
        if self._waiting is None:
            return
        ready, d = self._waiting
        try:
            value = ready()
        except Exception:
            self._waiting = None
            d.errback()
            return
        if value is not None:
            self._waiting = None
            d.callback(value)
        elif self.closed.called:
            self._waiting = None
            d.errback(Malformed(f"connection closed; unread bytes {self.buffer!r}"))

    def _wait(self, ready: Any, timeout: float) -> defer.Deferred[Any]:
        assert self._waiting is None, "one read at a time"

        def cancelled(_: defer.Deferred[Any]) -> None:
            self._waiting = None

        d: defer.Deferred[Any] = defer.Deferred(cancelled)
        self._waiting = (ready, d)
        self._check()
        return d.addTimeout(timeout, reactor)

    def read(self, size: int, timeout: float = WAIT) -> defer.Deferred[bytes]:
        """Exactly ``size`` bytes (fails if the server closes first)."""

        def ready() -> Optional[bytes]:
            if len(self.buffer) < size:
                return None
            data, self.buffer = self.buffer[:size], self.buffer[size:]
            return data

        return self._wait(ready, timeout)

    def response(self, timeout: float = WAIT) -> defer.Deferred[Reply]:
        """The next response with any 102s before it."""

        def ready() -> Optional[Reply]:
            found = split_response(self.buffer)
            if found is None:
                return None
            reply, self.buffer = found
            return reply

        return self._wait(ready, timeout)

    def wait_closed(self, timeout: float = WAIT) -> defer.Deferred[None]:
        """Fires once the server has closed the connection (fails after ``timeout``)."""
        d: defer.Deferred[None] = defer.Deferred()

        def fire(result: Any) -> Any:
            if not d.called:
                d.callback(None)
            return result

        self.closed.addBoth(fire)
        return d.addTimeout(timeout, reactor)


def connect(port: int) -> defer.Deferred[RawClient]:
    """A RawClient connected to 127.0.0.1:``port``."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=int(WAIT))
    return connectProtocol(endpoint, RawClient()).addTimeout(WAIT, reactor)


@defer.inlineCallbacks
def get(port: int, target: str) -> Generator[Any, Any, Reply]:
    """One request on a new connection, closed afterwards; its response."""
    client = yield connect(port)
    client.send(f"GET {target} HTTP/1.1\r\n\r\n".encode("ascii"))
    try:
        return (yield client.response())
    finally:
        yield client.close()


# -- golden transcripts ------------------------------------------------------------------------
TRANSCRIPT = re.compile(r"^```transcript ([\w-]+)( close)?\n(.*?)^```", re.M | re.S)
FIXTURE = re.compile(r"^```fixture\n(.*?)^```", re.M | re.S)
_ESCAPE = re.compile(r"\\(r|n|\\)")
PLACEHOLDER = re.compile(r"\$\{([\w-]+)\}")
# Every placeholder has a fixed width, so a reply's length is known before it is read.
PLACEHOLDERS = {"token": (rb"[A-Za-z0-9+/]{58}==", 60)}


def _unescape(text: str) -> bytes:
    return _ESCAPE.sub(lambda m: {"r": "\r", "n": "\n", "\\": "\\"}[m.group(1)], text).encode()


@dataclass
class Transcript:
    """One connection: (client bytes, expected server bytes) exchanges, in order;
    ``closes`` if the server must close the connection after the last one."""

    name: str
    exchanges: list[tuple[str, str]]
    closes: bool


def transcripts() -> dict[str, Transcript]:
    with open(DOCUMENT) as f:
        text = f.read()
    found: dict[str, Transcript] = {}
    for match in TRANSCRIPT.finditer(text):
        name = match.group(1)
        if name in found:
            raise ValueError(f"transcript {name} twice in {DOCUMENT}")
        exchanges: list[tuple[str, str]] = []
        previous = "S"
        for line in match.group(3).splitlines():
            side, sep, data = line.partition(": ")
            if side not in ("C", "S") or not sep:
                raise ValueError(f"bad line {line!r} in transcript {name}")
            if side == "C" and previous == "S":
                exchanges.append(("", ""))
            sent, expected = exchanges[-1]
            exchanges[-1] = (sent + data, expected) if side == "C" else (sent, expected + data)
            previous = side
        found[name] = Transcript(name, exchanges, bool(match.group(2)))
    return found


def fixture() -> list[str]:
    """The lines of the document's fixture block (``qa ...`` or ``sql ...``)."""
    with open(DOCUMENT) as f:
        match = FIXTURE.search(f.read())
    assert match is not None, f"no fixture block in {DOCUMENT}"
    return [line for line in match.group(1).splitlines() if line.strip()]


def apply_fixture(node: Node) -> None:
    for line in fixture():
        if line.startswith("qa "):
            node.qa(line)
        elif line.startswith("sql "):
            node.sql(line[len("sql "):])
        else:
            raise ValueError(f"bad fixture line {line!r}")


def _expected(template: str, captured: dict[str, bytes]) -> tuple[re.Pattern[bytes], int, bytes]:
    """(pattern, byte length, readable form) of one expected server part."""
    pattern, length, readable = b"", 0, b""
    position = 0
    seen: set[str] = set()
    for match in PLACEHOLDER.finditer(template):
        literal = _unescape(template[position:match.start()])
        pattern += re.escape(literal)
        length += len(literal)
        readable += literal
        name = match.group(1)
        if name in captured:
            pattern += re.escape(captured[name])
            length += len(captured[name])
            readable += captured[name]
        else:
            regex, width = PLACEHOLDERS[name]
            pattern += b"(?P=%s)" % name.encode() if name in seen else (
                b"(?P<%s>%s)" % (name.encode(), regex))
            seen.add(name)
            length += width
            readable += match.group(0).encode()
        position = match.end()
    literal = _unescape(template[position:])
    return re.compile(pattern + re.escape(literal), re.S), length + len(literal), readable + literal


def _sent(template: str, captured: dict[str, bytes]) -> bytes:
    def value(match: re.Match[str]) -> str:
        return captured[match.group(1)].decode("ascii")

    return _unescape(PLACEHOLDER.sub(value, template))


@defer.inlineCallbacks
def replay(testcase: Any, port: int, transcript: Transcript,
           captured: dict[str, bytes]) -> Generator[Any, Any, None]:
    """Play ``transcript`` on a new connection, byte for byte; placeholder values seen
    in replies are added to ``captured`` (and substituted where the client sends them)."""
    client = yield connect(port)
    try:
        for sent, expected in transcript.exchanges:
            if sent:
                client.send(_sent(sent, captured))
            pattern, length, readable = _expected(expected, captured)
            try:
                received = yield client.read(length)
            except Malformed:
                received = client.buffer
            match = pattern.fullmatch(received)
            if match is None:
                testcase.assertEqual(received, readable, f"transcript {transcript.name}")
            for name, value in match.groupdict().items():
                captured[name] = value
        if transcript.closes:
            yield client.wait_closed()
            testcase.assertEqual(client.buffer, b"", "bytes after the last expected reply")
    finally:
        if not client.closed.called:
            yield client.close()
