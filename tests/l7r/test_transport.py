"""The L7R's transports (qvd/stream/transport.py) on real loopback sockets with real TLS
clients (the stdlib's, in threads): a write is a TLS record of its own, writes made during
the handshake arrive, a close is a ``close_notify`` and an abort is not, the peer's
``close_notify`` is a half-close, a TCP end without one is a loss, a refused handshake
ends quietly, client certificates are checked against the CA and its CRL; the splice's
own tests run again on these transports (backpressure, half-close); ``connect`` fails as
Twisted's endpoints do."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import tempfile
from typing import Any, Generator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twisted.internet import defer, error, protocol, reactor, threads
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from qvd.config import Config, parse_properties
from qvd.l7r.service import listen
from qvd.l7r.tls import server_context
from qvd.stream import transport
from qvd.stream.splice import SpliceEnd
from tests.l7r import test_splice
from tests.support.cclient import read_to_end, strict_context
from tests.support.l7r import self_signed, tls_conf
from tests.support.paths import scratch_dir
from tests.support.waiting import poll


@implementer(IHalfCloseableProtocol)
class Server(protocol.Protocol):
    """The server's side of one connection: what it reads and how its input ended."""

    def __init__(self, greeting: tuple[bytes, ...] = ()) -> None:
        self.greeting = greeting
        self.received = b""
        self.half_closed: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[tuple[Failure]] = defer.Deferred()

    def connectionMade(self) -> None:
        for chunk in self.greeting:  # written before the TLS handshake is done
            self.transport.write(chunk)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.half_closed.callback(None)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:
        self.lost.callback((reason,))  # a Failure passed on its own would be an errback


class Servers(protocol.Factory):
    def __init__(self, greeting: tuple[bytes, ...] = ()) -> None:
        self.greeting = greeting
        self.made: list[Server] = []

    def buildProtocol(self, addr: Any) -> Server:
        server = Server(self.greeting)
        self.made.append(server)
        return server


class TLSTransportTests(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        directory = scratch_dir(self)
        self.cert, key = self_signed(directory)
        self.context = server_context(Config(parse_properties(tls_conf(self.cert, key))))

    def serve(self, greeting: tuple[bytes, ...] = ()) -> Servers:
        self.servers = Servers(greeting)
        self.port = listen(reactor, "127.0.0.1", 0, self.servers, self.context)
        self.addCleanup(self.port.stopListening)
        return self.servers

    def client(self, version: Optional[ssl.TLSVersion] = None) -> defer.Deferred[ssl.SSLSocket]:
        context = strict_context(self.cert)
        if version is not None:
            context.maximum_version = version

        def connect() -> ssl.SSLSocket:
            raw = socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=10)
            return context.wrap_socket(raw, server_hostname="localhost",
                                       suppress_ragged_eofs=False)

        d = threads.deferToThread(connect)
        d.addCallback(lambda sock: self.addCleanup(sock.close) or sock)
        return d

    @defer.inlineCallbacks
    def assert_lost(self, server: Server, kind: type[Exception]) -> Generator[Any, Any, None]:
        """Wait until the server's protocol hears the connection ended, and check how."""
        (reason,) = yield server.lost
        self.assertTrue(reason.check(kind), reason)

    @defer.inlineCallbacks
    def connected(self) -> Generator[Any, Any, tuple[ssl.SSLSocket, Server]]:
        servers = self.serve()
        client = yield self.client()
        yield threads.deferToThread(client.sendall, b"hi")
        yield poll(lambda: servers.made and servers.made[0].received, bool, 10,
                   "the server reading the client's first bytes")
        return client, servers.made[0]

    @defer.inlineCallbacks
    def test_each_write_is_a_record_and_a_close_is_a_close_notify(self) -> Generator[Any, Any, None]:
        """What is written during the handshake arrives; each write is read on its own
        (QVD's C client reads one record at a time); ``loseConnection`` ends with a
        ``close_notify`` once the peer answers it."""
        servers = self.serve(greeting=(b"HTTP/1.1 404 Not Found\r\n\r\n", b"body"))
        client = yield self.client()
        [server] = servers.made
        server.transport.write(b"x" * 40000)  # three records, read one by one
        server.transport.loseConnection()
        reads, ending = yield threads.deferToThread(read_to_end, client)
        self.assertEqual(reads[:2], [b"HTTP/1.1 404 Not Found\r\n\r\n", b"body"])
        self.assertEqual([len(r) for r in reads[2:]], [16384, 16384, 40000 - 2 * 16384])
        self.assertEqual(ending, "close_notify")
        client.close()
        yield self.assert_lost(server, error.ConnectionDone)

    @defer.inlineCallbacks
    def test_an_abort_has_no_close_notify(self) -> Generator[Any, Any, None]:
        client, server = yield self.connected()
        server.transport.write(b"queued")
        server.transport.abortConnection()
        _, ending = yield threads.deferToThread(read_to_end, client)
        self.assertIn(ending, ("no close_notify", "reset"))
        yield self.assert_lost(server, error.ConnectionAborted)

    @defer.inlineCallbacks
    def test_the_peers_close_notify_is_a_half_close(self) -> Generator[Any, Any, None]:
        """The client's ``close_notify`` ends the server's input (a half-close for the
        protocol); the server's own close then completes the TLS close at once."""
        client, server = yield self.connected()
        unwrapped = threads.deferToThread(client.unwrap)  # close_notify, then wait for ours
        yield server.half_closed
        self.assertFalse(server.lost.called)
        server.transport.loseConnection()
        raw = yield unwrapped  # our close_notify came: the client's TLS close completed
        raw.close()
        yield self.assert_lost(server, error.ConnectionDone)

    @defer.inlineCallbacks
    def test_a_tcp_end_without_close_notify_is_a_loss(self) -> Generator[Any, Any, None]:
        client, server = yield self.connected()
        client.shutdown(socket.SHUT_WR)  # a FIN under the TLS stream
        yield self.assert_lost(server, error.ConnectionLost)
        self.assertFalse(server.half_closed.called)

    @defer.inlineCallbacks
    def test_a_refused_handshake_ends_quietly(self) -> Generator[Any, Any, None]:
        """TLS 1.1 is below the floor: the client hears why, the server's protocol
        hears the connection was lost, nothing is logged as an error."""
        servers = self.serve()
        with self.assertRaises(ssl.SSLError):
            yield self.client(ssl.TLSVersion.TLSv1_1)
        yield self.assert_lost(servers.made[0], error.ConnectionLost)
        self.assertEqual(self.flushLoggedErrors(), [])


class MaterialFromTheDatabaseTests(unittest.TestCase):
    def test_certificate_and_key_from_ssl_configs(self) -> None:
        """``qa config ssl`` material: loaded through a private directory removed at once."""
        cert, key = self_signed(scratch_dir(self))
        config = Config(parse_properties("path.l7r.ssl.cert = /nonexistent\n"))
        with open(cert) as c, open(key) as k:
            config.replace_db_rows([], [("l7r.ssl.cert", c.read()), ("l7r.ssl.key", k.read())])
        before = set(os.listdir(tempfile.gettempdir()))
        context = server_context(config)
        self.assertEqual(set(os.listdir(tempfile.gettempdir())) - before, set())
        self.assertEqual(context.minimum_version, ssl.TLSVersion.TLSv1_2)


class OurTransportsSpliceTests(test_splice.SpliceTests):
    """The splice's tests again, both ends on our transports (plain TCP)."""

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        self.vm_peer = test_splice.Peer()
        vm_side = protocol.Factory.forProtocol(lambda: self.vm_peer)
        self.vm_port = reactor.listenTCP(0, vm_side, interface="127.0.0.1")
        self.addCleanup(self.vm_port.stopListening)
        self.vm_end = yield transport.connect(reactor, "127.0.0.1",
                                              self.vm_port.getHost().port, SpliceEnd())
        self.ended: defer.Deferred = defer.Deferred()
        self.client_end = SpliceEnd(self.vm_end, lambda end: self.ended.callback(end))
        front = protocol.Factory.forProtocol(lambda: self.client_end)
        self.front_port = listen(reactor, "127.0.0.1", 0, front)
        self.addCleanup(self.front_port.stopListening)
        self.client = test_splice.Peer()
        yield protocol.ClientCreator(reactor, lambda: self.client).connectTCP(
            "127.0.0.1", self.front_port.getHost().port)

    def buffered(self, front: Any) -> int:
        return front._queued


class ConnectTests(unittest.TestCase):
    def test_a_refused_connect(self) -> defer.Deferred:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens there now
        return self.assertFailure(transport.connect(reactor, "127.0.0.1", port, SpliceEnd()),
                                  error.ConnectionRefusedError)

    @defer.inlineCallbacks
    def test_a_name_is_resolved_first(self) -> Generator[Any, Any, None]:
        listening = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol),
                                      interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        end = yield transport.connect(reactor, "localhost", listening.getHost().port, SpliceEnd())
        self.assertEqual(end.transport.getPeer().port, listening.getHost().port)
        end.transport.abortConnection()



def issue(directory: str, name: str, issuer: Optional[tuple[Any, Any]] = None) -> tuple[Any, Any]:
    """(certificate, key) called ``name``, written to ``<name>.pem`` and ``<name>-key.pem``,
    signed by ``issuer`` (a CA of its own when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer, signer_key = issuer if issuer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(signer.subject if signer else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None),
                           critical=True)
            .sign(signer_key, hashes.SHA256()))
    with open(os.path.join(directory, f"{name}.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, f"{name}-key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert, key


def revoke(path: str, ca: tuple[Any, Any], *certs: Any) -> None:
    """A CRL of ``ca`` revoking ``certs``, written to ``path``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca[0].subject)
           .last_update(now - datetime.timedelta(minutes=5))
           .next_update(now + datetime.timedelta(days=1)))
    for cert in certs:
        crl = crl.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1)).build())
    with open(path, "wb") as f:
        f.write(crl.sign(ca[1], hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


class ClientCertificateTests(unittest.TestCase):
    """``l7r.client.cert.require`` with a CA and its CRL: a certificate the CA signed gets
    in; a revoked one, another CA's or none does not get a byte through."""

    timeout = 30

    def setUp(self) -> None:
        self.directory = directory = scratch_dir(self)
        self.cert, key = self_signed(directory)
        ca = issue(directory, "ca")
        issue(directory, "alice", ca)
        revoke(os.path.join(directory, "crl.pem"), ca, issue(directory, "mallory", ca)[0])
        issue(directory, "stranger")
        conf = tls_conf(self.cert, key) + (
            "l7r.client.cert.require = 1\n"
            f"path.l7r.ssl.ca = {directory}/ca.pem\npath.l7r.ssl.crl = {directory}/crl.pem\n")
        self.servers = Servers(greeting=(b"welcome",))
        self.port = listen(reactor, "127.0.0.1", 0, self.servers,
                           server_context(Config(parse_properties(conf))))
        self.addCleanup(self.port.stopListening)

    def client_as(self, name: Optional[str]) -> defer.Deferred[bytes]:
        """Connect with ``name``'s certificate (None: none), say hello, read the answer."""
        context = strict_context(self.cert)
        if name is not None:
            context.load_cert_chain(os.path.join(self.directory, f"{name}.pem"),
                                    os.path.join(self.directory, f"{name}-key.pem"))

        def talk() -> bytes:
            raw = socket.create_connection(("127.0.0.1", self.port.getHost().port), timeout=10)
            with context.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"hello")
                return sock.recv(100)

        return threads.deferToThread(talk)

    @defer.inlineCallbacks
    def test_only_a_valid_client_certificate_gets_in(self) -> Generator[Any, Any, None]:
        self.assertEqual((yield self.client_as("alice")), b"welcome")
        for name in ("mallory", "stranger", None):  # the alert, or the reset after it
            yield self.assertFailure(self.client_as(name), ssl.SSLError, ConnectionResetError)
        self.assertEqual([server.received for server in self.servers.made],
                         [b"hello", b"", b"", b""])
