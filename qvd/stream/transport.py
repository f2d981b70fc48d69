"""Sockets as Twisted transports that send at once: the L7R's data path.

Twisted's own TCP transport never sends from ``write``: it arms EPOLLOUT and
sends on the next pass of the reactor (two ``epoll_ctl`` and a loop turn per
chunk), and its TLS runs over memory BIOs with copies and cffi calls per
record; together ~35 % of a 64-byte round trip through the L7R
(bench/RESULTS.md).  These transports are small descriptors of ours on the
reactor's public ``IReactorFDSet``, implementing Twisted's transport, producer
and consumer interfaces, so protocols (the HTTP server, the splice) do not
know the difference:

* ``write`` sends at once and asks for EPOLLOUT only when the kernel took less
  than everything; above ``HIGH_WATER`` waiting bytes a registered producer is
  paused, and it is resumed once they are out (backpressure);
* TLS runs on the socket itself (the stdlib ``ssl`` module on the system
  OpenSSL, non-blocking).  Each ``write`` is one ``SSL_write``, so one record
  per write up to 16 KiB: a peer that reads record by record (QVD's C client)
  sees an HTTP head and its body as the two writes they were.  After a
  want-write the same bytes are offered again, as OpenSSL requires.  A read
  takes what OpenSSL already holds (``pending``), which epoll cannot see;
* a TLS stream ends with a ``close_notify`` (ours, then the peer's is awaited),
  never with a TCP half-close under it; ``abortConnection`` drops the socket
  without one, so the peer can tell a close from a loss.  Plain TCP half-closes.

``StreamPort`` accepts into them (TLS or plain TCP); ``connect`` opens a plain
TCP connection (the L7R's side towards a VM's NX port).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections import deque
from typing import Any, Optional, Union

from twisted.internet import address, defer, error, interfaces
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

READ_SIZE = 65536  # one plain read (as Twisted's own)
RECORD = 16384  # the most plaintext one TLS record carries
READ_LIMIT = 262144  # bytes one TLS read event takes before others get a turn
HIGH_WATER = 65536  # waiting bytes above which a registered producer is paused
ACCEPTS = 64  # connections one read event of a listening port accepts
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

Address = Union[address.IPv4Address, address.IPv6Address]


def _address(sockaddr: Any, family: int) -> Address:
    if family == socket.AF_INET6:
        return address.IPv6Address("TCP", *sockaddr[:2])
    return address.IPv4Address("TCP", *sockaddr[:2])


@implementer(interfaces.ITCPTransport, interfaces.ISystemHandle, interfaces.IConsumer,
             interfaces.IPushProducer, interfaces.IReadWriteDescriptor)
class _SocketTransport:
    """What the TCP and TLS transports share: state, producers, pausing, the end.

    ``connected`` is True until the connection is lost; ``disconnecting`` once
    ``loseConnection`` was called.  ``_queue`` holds what the kernel (or
    OpenSSL) did not take yet, ``_queued`` its size.
    """

    __slots__ = ("reactor", "socket", "protocol", "producer", "connected", "disconnecting",
                 "_fd", "_family", "_queue", "_queued", "_streaming", "_producer_paused",
                 "_paused", "_reading", "_writing", "_read_done", "_aborting")

    def __init__(self, sock: socket.socket, protocol: interfaces.IProtocol, reactor: Any):
        self.reactor = reactor
        self.socket = sock
        self.protocol = protocol
        self.producer: Optional[interfaces.IProducer] = None
        self.connected = True
        self.disconnecting = False
        self._fd = sock.fileno()
        self._family = sock.family
        self._queue: Optional[deque] = None
        self._queued = 0
        self._streaming = False
        self._producer_paused = False
        self._paused = False
        self._reading = False
        self._writing = False
        self._read_done = False
        self._aborting = False

    # -- the reactor's side ------------------------------------------------------------
    def fileno(self) -> int:
        return self._fd if self.connected else -1

    def logPrefix(self) -> str:
        return type(self.protocol).__name__

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the socket hang up (or an error of ours ended it)."""
        self._close(reason)

    def startReading(self) -> None:
        """Read when data comes (unless paused or over); the port calls it once set up."""
        if not self._reading and self.connected and not self._paused and not self._read_done:
            self._reading = True
            self.reactor.addReader(self)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.reactor.removeReader(self)

    def _start_writing(self) -> None:
        if not self._writing and self.connected:
            self._writing = True
            self.reactor.addWriter(self)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self.reactor.removeWriter(self)

    # -- ITransport ----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if isinstance(data, str):
            raise TypeError("data must be bytes")
        if not data or not self._writable():
            return
        if self._queue:
            self._enqueue(data)
        else:
            self._send(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.write(b"".join(iovec))

    def loseConnection(self) -> None:
        """Close once what was written is out (for TLS: then a ``close_notify``)."""
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        self._start_writing()  # ``doWrite`` flushes, then ends the connection

    def abortConnection(self) -> None:
        """Drop the connection now, whatever is still waiting to be sent."""
        if not self.connected or self._aborting:
            return
        self.disconnecting = self._aborting = self._read_done = True
        self._stop_reading()
        self._stop_writing()
        self._queue = None
        self.reactor.callLater(0, self._close, Failure(error.ConnectionAborted()))

    def getPeer(self) -> Address:
        return _address(self.socket.getpeername(), self._family)

    def getHost(self) -> Address:
        return _address(self.socket.getsockname(), self._family)

    def getHandle(self) -> socket.socket:
        return self.socket

    # -- ITCPTransport's socket options --------------------------------------------------
    def getTcpNoDelay(self) -> bool:
        return bool(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))

    def getTcpKeepAlive(self) -> bool:
        return bool(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))

    # -- IConsumer -------------------------------------------------------------------------
    def registerProducer(self, producer: interfaces.IProducer, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(f"cannot register producer {producer!r}: {self.producer!r}"
                               " was never unregistered")
        if not self.connected:
            producer.stopProducing()
            return
        self.producer = producer
        self._streaming = streaming
        self._producer_paused = False
        if not streaming:
            producer.resumeProducing()  # type: ignore[attr-defined]
        elif self._queued > HIGH_WATER:
            self._pause_producer()

    def unregisterProducer(self) -> None:
        self.producer = None
        self._producer_paused = False

    # -- IPushProducer ---------------------------------------------------------------------
    def pauseProducing(self) -> None:
        """Stop reading.  Lazily: the socket stays registered until data comes while
        paused (``doRead`` then unregisters it), since an HTTP request pauses its
        connection while it is handled and its client rarely sends meanwhile; two
        ``epoll_ctl`` saved per request."""
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if not self.disconnecting:
            self.startReading()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- output ------------------------------------------------------------------------------
    def _writable(self) -> bool:
        return self.connected and not self._aborting

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _enqueue(self, data: Any) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(data)
        self._queued += len(data)
        self._start_writing()
        if self._queued > HIGH_WATER and self._streaming and not self._producer_paused:
            self._pause_producer()

    def _pause_producer(self) -> None:
        if self.producer is not None:
            self._producer_paused = True
            self.producer.pauseProducing()

    def _drained(self) -> None:
        """Everything written is out: let the producer go on, or finish a close."""
        self._stop_writing()
        self._queue = None  # an idle connection keeps no deque
        producer = self.producer
        if producer is not None:
            if self._producer_paused:
                self._producer_paused = False
                producer.resumeProducing()
            elif not self._streaming:
                producer.resumeProducing()  # type: ignore[attr-defined]

    def _failed_write(self, reason: BaseException) -> None:
        """A send failed outside ``doWrite``: end the connection on the next turn (the
        caller of ``write`` must not hear ``connectionLost`` in the middle of it)."""
        if self._aborting:
            return
        self.disconnecting = self._aborting = self._read_done = True
        self._stop_reading()
        self._stop_writing()
        self._queue = None
        self.reactor.callLater(0, self._close, Failure(error.ConnectionLost(str(reason))))

    # -- the end --------------------------------------------------------------------------
    def _close(self, reason: Failure) -> None:
        """Release the socket, stop the producer, tell the protocol (once)."""
        if not self.connected:
            return
        self._stop_reading()  # while ``fileno`` still names the socket
        self._stop_writing()
        self.connected = False
        self._queue = None
        try:
            self.socket.close()
        except OSError:
            pass
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.stopProducing()
            except Exception:
                log.failure("{producer} failed to stop", producer=producer)
        self.protocol.connectionLost(reason)


@implementer(interfaces.IHalfCloseableDescriptor)
class TCPTransport(_SocketTransport):
    """A plain TCP connection that sends at once and half-closes."""

    __slots__ = ("_write_done", "_shutting_write")

    def __init__(self, sock: socket.socket, protocol: interfaces.IProtocol, reactor: Any):
        super().__init__(sock, protocol, reactor)
        self._write_done = False
        self._shutting_write = False

    def doRead(self) -> None:
        if self._paused:
            self._stop_reading()
            return
        try:
            data = self.socket.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            self._close(Failure(error.ConnectionLost(str(e))))
            return
        if data:
            self.protocol.dataReceived(data)
        else:
            self._end_of_input()

    def readConnectionLost(self, reason: Failure) -> None:
        """The reactor saw the peer's end of input (a hang-up with nothing left to read)."""
        self._end_of_input()

    def writeConnectionLost(self, reason: Failure) -> None:
        self._close(reason)

    def _end_of_input(self) -> None:
        self._read_done = True
        self._stop_reading()
        if self._write_done or self.disconnecting:
            self._close(Failure(error.ConnectionDone()))
        elif interfaces.IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self._close(Failure(error.ConnectionDone()))

    def loseConnection(self) -> None:
        if self.connected and not self.disconnecting:
            self._stop_reading()
        super().loseConnection()

    def loseWriteConnection(self) -> None:
        """Half-close: a FIN once what was written is out; reading goes on."""
        if self.connected and not self._shutting_write:
            self._shutting_write = True
            self._start_writing()

    def _writable(self) -> bool:
        return self.connected and not self._aborting and not self._shutting_write

    def _send(self, data: bytes) -> None:
        try:
            sent = self.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            self._failed_write(e)
            return
        if sent < len(data):
            self._enqueue(memoryview(data)[sent:])

    def doWrite(self) -> None:
        queue = self._queue
        while queue:
            head = queue[0]
            try:
                sent = self.socket.send(head)
            except BlockingIOError:
                return
            except OSError as e:
                self._close(Failure(error.ConnectionLost(str(e))))
                return
            self._queued -= sent
            if sent < len(head):
                queue[0] = memoryview(head)[sent:]
                return
            queue.popleft()
        self._drained()
        if not self.connected:
            return
        if self.disconnecting:
            self._discard_unread()
            self._close(Failure(error.ConnectionDone()))
        elif self._shutting_write and not self._write_done:
            self._shut_write()

    def _discard_unread(self) -> None:
        """Read away what the peer already sent: closing a socket with unread bytes
        makes the kernel answer with a reset, which can cost the peer our last reply."""
        for _ in range(16):
            try:
                if not self.socket.recv(READ_SIZE):
                    return
            except OSError:
                return

    def _shut_write(self) -> None:
        self._write_done = True
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as e:
            self._close(Failure(error.ConnectionLost(str(e))))
            return
        if self._read_done:
            self._close(Failure(error.ConnectionDone()))
        elif interfaces.IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.writeConnectionLost()


class TLSTransport(_SocketTransport):
    """A TLS server connection on its socket (``ssl.SSLSocket``, non-blocking).

    The protocol is connected at once, before the handshake (its timers cover
    the handshake too); what it writes before the handshake is done waits.
    Not half-closeable: ``loseWriteConnection`` is a whole close, since TLS
    cannot end one direction and go on reading the other without losing data.
    """

    __slots__ = ("_handshaking", "_closing", "_write_wants_read", "_read_wants_write")

    socket: ssl.SSLSocket

    def __init__(self, sock: ssl.SSLSocket, protocol: interfaces.IProtocol, reactor: Any):
        super().__init__(sock, protocol, reactor)
        self._handshaking = True
        self._closing = False  # our close_notify is out; the peer's is awaited
        self._write_wants_read = False
        self._read_wants_write = False

    def loseWriteConnection(self) -> None:
        self.loseConnection()

    # -- input ---------------------------------------------------------------------------
    def doRead(self) -> None:
        if self._closing:
            self._await_close_notify()
            return
        if self._paused and not self._write_wants_read:
            self._stop_reading()
            return
        if self._handshaking:
            self._handshake()
            return
        if self._write_wants_read:
            self._write_wants_read = False
            self._start_writing()
        sock, data, more, total, end = self.socket, b"", None, 0, None
        while True:
            try:
                chunk = sock.read(RECORD)  # one record at most
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:  # OpenSSL must send before it reads on
                self._read_wants_write = True
                self._start_writing()
                break
            except ssl.SSLZeroReturnError:
                end = error.ConnectionDone()
                break
            except ssl.SSLEOFError:
                end = error.ConnectionLost("the peer closed without a TLS close_notify")
                break
            except (ssl.SSLError, OSError) as e:
                end = error.ConnectionLost(str(e))
                break
            if not chunk:  # the peer's close_notify
                end = error.ConnectionDone()
                break
            if data:
                if more is None:
                    more = [data]
                more.append(chunk)
            else:
                data = chunk
            if len(chunk) < RECORD:  # the record is all read: OpenSSL holds nothing more
                break
            total += RECORD
            if total >= READ_LIMIT and not sock.pending():
                break
        if more is not None:
            data = b"".join(more)
        if data:
            self.protocol.dataReceived(data)
        if end is not None and self.connected:
            self._end_of_input(end)

    def _end_of_input(self, reason: Exception) -> None:
        self._read_done = True
        self._stop_reading()
        if not isinstance(reason, error.ConnectionDone):
            self._close(Failure(reason))  # lost, or cut without a close_notify
        elif self.disconnecting:
            self._start_writing()  # our close can finish now
        elif interfaces.IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self.loseConnection()

    # -- output --------------------------------------------------------------------------
    def _writable(self) -> bool:
        return self.connected and not self._aborting and not self._closing

    def _send(self, data: bytes) -> None:
        if self._handshaking:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(data)
            self._queued += len(data)
            return
        try:
            self.socket.write(data)  # all of it, or an exception (no partial writes)
        except ssl.SSLWantWriteError:
            self._enqueue(data)
        except ssl.SSLWantReadError:
            self._enqueue(data)
            self._write_wants_read = True
        except (ssl.SSLError, OSError) as e:
            self._failed_write(e)

    def doWrite(self) -> None:
        if self._handshaking:
            if self.disconnecting:  # no TLS session to close yet
                self._close(Failure(error.ConnectionDone()))
            else:
                self._handshake()
            return
        if self._read_wants_write:
            self._read_wants_write = False
            self.doRead()
            if not self.connected:
                return
        queue = self._queue
        while queue:
            try:
                self.socket.write(queue[0])  # the very bytes OpenSSL saw last time
            except ssl.SSLWantWriteError:
                return
            except ssl.SSLWantReadError:  # OpenSSL must read first (paused or not)
                self._write_wants_read = True
                self._stop_writing()
                self._read_anyway()
                return
            except (ssl.SSLError, OSError) as e:
                self._close(Failure(error.ConnectionLost(str(e))))
                return
            self._queued -= len(queue.popleft())
        self._drained()
        if self.connected and self.disconnecting and not self._closing:
            self._close_notify()

    # -- handshake and close ---------------------------------------------------------------
    def _handshake(self) -> None:
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            self._stop_writing()
            self.startReading()
            return
        except ssl.SSLWantWriteError:
            self._start_writing()
            return
        except (ssl.SSLError, OSError) as e:
            self._close(Failure(error.ConnectionLost(f"TLS handshake failed: {e}")))
            return
        self._handshaking = False
        if self._queue or self.disconnecting:
            self._start_writing()
        else:
            self._stop_writing()
        if not self.disconnecting:
            self.startReading()

    def _close_notify(self) -> None:
        """Send our ``close_notify``, then wait for the peer's (or its end of input);
        the caller bounds that wait (``hang_up``'s abort)."""
        if self._read_done:
            try:
                self.socket.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
            self._close(Failure(error.ConnectionDone()))
            return
        try:
            self.socket.unwrap()
        except ssl.SSLWantWriteError:
            self._start_writing()  # the alert did not fit: offered again when writable
            return
        except (ssl.SSLError, OSError, ValueError):
            pass  # sent; the peer's close_notify has not come yet (or never will)
        else:  # the peer had closed already
            self._close(Failure(error.ConnectionDone()))
            return
        self._closing = True
        self._read_anyway()  # paused or not: only the peer's close is awaited

    def _read_anyway(self) -> None:
        if not self._reading:
            self._reading = True
            self.reactor.addReader(self)

    def _await_close_notify(self) -> None:
        """What the peer sends after our close is dropped; its close ends the connection."""
        while True:
            try:
                if not self.socket.recv(RECORD):
                    break
            except ssl.SSLWantReadError:
                return
            except (ssl.SSLError, OSError, ValueError):
                break
        self._close(Failure(error.ConnectionDone()))

    def resumeProducing(self) -> None:
        if not self._closing:
            super().resumeProducing()

    def pauseProducing(self) -> None:
        if not self._closing:
            super().pauseProducing()


@implementer(interfaces.IListeningPort, interfaces.IReadDescriptor)
class StreamPort:
    """A listening socket whose connections get our transports (TLS when ``tls`` is a
    server ``ssl.SSLContext``)."""

    def __init__(self, sock: socket.socket, factory: Factory, reactor: Any,
                 tls: Optional[ssl.SSLContext] = None):
        self.socket = sock
        self.factory = factory
        self.reactor = reactor
        self.tls = tls
        self._listening = False

    def startListening(self) -> None:
        self.socket.setblocking(False)
        self.factory.doStart()
        self._listening = True
        self.reactor.addReader(self)

    def stopListening(self) -> defer.Deferred[None]:
        if self._listening:
            self._listening = False
            self.reactor.removeReader(self)
            self.socket.close()
            self.factory.doStop()
        return defer.succeed(None)

    def connectionLost(self, reason: Failure) -> None:
        self.stopListening()

    def getHost(self) -> Address:
        return _address(self.socket.getsockname(), self.socket.family)

    def fileno(self) -> int:
        return self.socket.fileno() if self._listening else -1

    def logPrefix(self) -> str:
        return f"{type(self.factory).__name__} (our port)"

    def doRead(self) -> None:
        self._accept()

    def take_backlog(self) -> None:
        """Accept every connection the kernel has queued for this socket: closing it
        would reset them (with SO_REUSEPORT, the sockets still open get the new ones)."""
        while self._listening and self._accept():
            pass

    def _accept(self) -> bool:
        """Accept up to ``ACCEPTS`` connections; whether more may be waiting."""
        for _ in range(ACCEPTS):
            try:
                sock, peer = self.socket.accept()
            except BlockingIOError:
                return False
            except ConnectionAbortedError:
                continue  # that client gave up while queued: the next one may do
            except OSError as e:
                if e.errno in _OUT_OF_RESOURCES:
                    log.warn("cannot accept a connection: {error}", error=os.strerror(e.errno))
                return False
            self._serve(sock, peer)
        return True

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        sock.setblocking(False)
        protocol = self.factory.buildProtocol(_address(peer, sock.family))
        if protocol is None:
            sock.close()
            return
        transport: _SocketTransport
        if self.tls is not None:
            try:
                wrapped = self.tls.wrap_socket(sock, server_side=True,
                                               do_handshake_on_connect=False,
                                               suppress_ragged_eofs=False)
            except (ssl.SSLError, OSError):  # the client is gone already
                sock.close()
                return
            transport = TLSTransport(wrapped, protocol, self.reactor)
        else:
            transport = TCPTransport(sock, protocol, self.reactor)
        protocol.makeConnection(transport)
        transport.startReading()


@implementer(interfaces.IWriteDescriptor)
class _Connecting:
    """A non-blocking connect in progress: writable means it is done (or failed)."""

    def __init__(self, reactor: Any, sock: socket.socket, protocol: interfaces.IProtocol,
                 timeout: float):
        self.reactor = reactor
        self.socket = sock
        self.protocol = protocol
        self.done: defer.Deferred[Any] = defer.Deferred(lambda _: self._fail(defer.CancelledError()))
        self._timer = reactor.callLater(timeout, self._fail, error.TCPTimedOutError())

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "connecting"

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw an error or hang-up (a refused connect shows as both)."""
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._fail(error.getConnectError((code, os.strerror(code))) if code
                   else error.ConnectionLost(reason.getErrorMessage()))

    def doWrite(self) -> None:
        self.reactor.removeWriter(self)
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(error.getConnectError((code, os.strerror(code))))
        else:
            self._connected()

    def _connected(self) -> None:
        if self._timer.active():
            self._timer.cancel()
        transport = TCPTransport(self.socket, self.protocol, self.reactor)
        self.protocol.makeConnection(transport)
        transport.startReading()
        self.done.callback(self.protocol)

    def _fail(self, reason: Exception) -> None:
        if self.done.called:
            return
        self.reactor.removeWriter(self)
        if self._timer.active():
            self._timer.cancel()
        self.socket.close()
        self.done.errback(Failure(reason))


def connect(reactor: Any, host: str, port: int, protocol: interfaces.IProtocol,
            timeout: float = 30.0) -> defer.Deferred[Any]:
    """Connect ``protocol`` over plain TCP with a transport of ours; fires with the
    protocol once connected, or fails as Twisted's endpoints do
    (``ConnectionRefusedError``, ``TCPTimedOutError``: all ``ConnectError``)."""
    if isIPAddress(host) or isIPv6Address(host):
        return _connect(reactor, host, port, protocol, timeout)
    return reactor.resolve(host).addCallback(
        lambda ip: _connect(reactor, ip, port, protocol, timeout))


def _connect(reactor: Any, host: str, port: int, protocol: interfaces.IProtocol,
             timeout: float) -> defer.Deferred[Any]:
    family = socket.AF_INET6 if isIPv6Address(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((host, port))
    if code not in (0, errno.EINPROGRESS):
        sock.close()
        return defer.fail(error.getConnectError((code, os.strerror(code))))
    connecting = _Connecting(reactor, sock, protocol, timeout)
    if code == 0:
        connecting._connected()
    else:
        reactor.addWriter(connecting)
    return connecting.done
