"""An in-process L7R on a real QVD-DB for the wire tests, its TLS material, and the
replay of ``protocols/l7r-http.md``'s golden transcripts against it.

The in-process L7R is an ``L7RService`` in its ``NodeDaemon`` on a free loopback
port, after ``prepare`` as ``twistd qvd-l7r`` does it.  The node's host row is made
with ``qa`` and its ``host_runtimes`` row set ``running`` with a fresh heartbeat with
SQL, as the HKD's heartbeat would (no HKD runs here).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Optional

from twisted.internet import defer, reactor

from qvd.certificates import write_self_signed
from qvd.daemon import NodeDaemon, prepare
from qvd.l7r.service import L7RService
from qvd.l7r.tls import server_context
from tests.support.admin import qa
from tests.support.postgres import drop_database, new_database
from tests.support.rawclient import WAIT, Malformed, Reply, connect, split_response
from tests.support.transcripts import Transcript, fixture, unescape

if TYPE_CHECKING:  # not imported at run time: pytest would try to collect it
    from tests.support.postgres import TestDatabase

DOCUMENT = "l7r-http.md"
ALIVE_BODY = b"I am alive!\r\n"

# Conf for an in-process L7R: plain HTTP on a free loopback port.
PLAIN = "l7r.use_ssl = 0\nl7r.address = 127.0.0.1\nl7r.port = 0\n"
PLACEHOLDER = re.compile(r"\$\{([\w-]+)\}")
# Every placeholder has a fixed width, so a reply's length is known before it is read.
PLACEHOLDERS = {"token": (rb"[A-Za-z0-9+/]{58}==", 60)}


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
        """One ``qa`` command line (``qa`` and shell words), which must succeed; its output."""
        assert line.startswith("qa "), line
        return qa(self.conf, line[len("qa "):])

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
    node = Node(db, db.write_conf(directory, PLAIN + f"path.run = {directory}/run\n"
                                  + extra_conf))
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
    service = L7RService(daemon, tls=server_context(config) if tls else None)
    service.setServiceParent(daemon)
    daemon.startService()
    testcase.addCleanup(daemon.stopService)
    yield daemon.started()
    yield service.ready
    node.service = service
    return node


@defer.inlineCallbacks
def start_tls_fixture(testcase: Any, extra_conf: str = "") -> Generator[Any, Any, tuple[Node, str]]:
    """An L7R serving TLS on the fixture of ``protocols/l7r-http.md``: (node, the
    certificate path for clients to verify it with)."""
    node = make_node(testcase, extra_conf, register=False)
    cert, key = self_signed(os.path.dirname(node.conf))
    with open(node.conf, "a") as f:
        f.write("l7r.use_ssl = 1\n" + tls_conf(cert, key))
    apply_fixture(node)
    return (yield start_l7r(testcase, node, tls=True)), cert


# -- TLS ---------------------------------------------------------------------------------------
def self_signed(directory: str, key_mode: int = 0o600) -> tuple[str, str]:
    """(cert path, key path) of a fresh self-signed certificate for localhost/127.0.0.1."""
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    write_self_signed(key_path, cert_path, ["localhost", "127.0.0.1"], days=1, key_mode=key_mode)
    return cert_path, key_path


def tls_conf(cert: str, key: str) -> str:
    return f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n"


def tls_get(port: int, cafile: str, target: str = "/qvd/ping",
            version: Optional[ssl.TLSVersion] = None) -> Reply:
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


# -- golden transcripts ------------------------------------------------------------------------
def apply_fixture(node: Node) -> None:
    for line in fixture(DOCUMENT):
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
        literal = unescape(template[position:match.start()])
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
    literal = unescape(template[position:])
    return re.compile(pattern + re.escape(literal), re.S), length + len(literal), readable + literal


def _sent(template: str, captured: dict[str, bytes]) -> bytes:
    def value(match: re.Match[str]) -> str:
        return captured[match.group(1)].decode("ascii")

    return unescape(PLACEHOLDER.sub(value, template))


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
