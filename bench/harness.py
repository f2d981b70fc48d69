"""What the L7R bench scripts share: the processes they start and the clients they drive.

Every server runs in its own process so that one measured process never pays for
another's work (``python bench/harness.py ROLE ...``, prints ``ready <port>``):

- ``backend``: the stand-in for nxagent, an asyncio server that, after a 9-byte
  command (``U``/``D``/``E`` + 8-byte big-endian size), sinks ``size`` bytes and
  answers ``K``, sources ``size`` bytes, or echoes forever;
- ``splice``: the L7R data-path harness: the project's TLS context
  (``server_context``), the L7R's ``listen`` (SO_REUSEPORT, the transports of
  ``qvd/stream/transport.py``) and the real ``SpliceEnd``/``join`` of
  ``qvd/stream/splice.py``, each accepted TLS stream joined to a new TCP
  connection to the backend (``transport.connect``), without the HTTP steps
  before the 101;
- ``fakes``: a FAKE VMA (SimpleRPC ``x_start`` -> ``"starting"``, ``x_state`` ->
  ``"listening"``) and a FAKE NX port (accepts and discards), for full connects
  without nxagent;
- ``holder``: a load generator keeping many echo sessions open (sessions_memory.py).

The clients are blocking sockets (Python's ``ssl``: OpenSSL in C, the GIL
released during I/O and handshakes), the cheapest client Python has.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import select
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHUNK = 1 << 20
WAIT = 30.0  # seconds a child may take to be ready, or a single request to answer
CPUS = sorted(os.sched_getaffinity(0))  # the cores this bench may use
# With two cores or more, ``pin`` keeps the load (clients, backend, PostgreSQL, fakes) on
# the first and the process measured (an L7R, haproxy) on the second, so that neither
# steals the other's core and every proxy gets the same share.
LOAD_CPU, PROXY_CPU = (CPUS[0], CPUS[1]) if len(CPUS) >= 2 else (None, None)


def pin(pid: int, cpu: Optional[int]) -> None:
    """Keep process ``pid`` (and what it starts from now on) on ``cpu`` (None: anywhere)."""
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


def pin_cluster(datadir: str, cpu: Optional[int]) -> None:
    """Keep a PostgreSQL server (its postmaster, the backends it has and will fork) on
    ``cpu``."""
    if cpu is None:
        return
    import psutil

    with open(os.path.join(datadir, "postmaster.pid")) as f:
        postmaster = psutil.Process(int(f.readline()))
    for process in [postmaster, *postmaster.children(recursive=True)]:
        pin(process.pid, cpu)


def raise_fd_limit(wanted: int = 65536) -> None:
    """Room for tens of thousands of sockets (root may raise the hard limit too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def max_sessions() -> int:
    """Spliced sessions one proxy process can hold: two sockets each, within the
    ``RLIMIT_NOFILE`` hard limit (which only a privileged process may raise)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return min(10_000, (hard - 64) // 2)


# -- child processes ---------------------------------------------------------------------------
class Child:
    """``python bench/harness.py <role> ...``; ``port`` once it printed ``ready <port>``."""

    def __init__(self, role: str, *args: Any, cpu: Optional[int] = None):
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), role, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pin(self.process.pid, cpu)
        self.ports = self.wait_line("ready").split()[1:]
        self.port = int(self.ports[0])

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_line(self, prefix: str, timeout: float = WAIT) -> str:
        """The child's next line, which must start with ``prefix`` and come in time."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else f"nothing in {timeout:.0f} s"
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"child {self.process.args[2]} said {line!r}, not {prefix!r}")
        return line

    def stop(self) -> None:
        from tests.support.processes import stop_popen
        stop_popen(self.process)


@contextlib.contextmanager
def children(*specs: tuple[Any, ...], cpu: Optional[int] = None) -> Iterator[list[Child]]:
    """Start children in order (a spec is ``(role, args...)``), on ``cpu`` if given; stop
    them all at the end."""
    started: list[Child] = []
    try:
        for spec in specs:
            started.append(Child(*spec, cpu=cpu))
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def certificate(directory: str) -> tuple[str, str, str]:
    """(cert, key, cert+key PEM for haproxy) made by the node's own ``ensure_certificate``."""
    from qvd.embedded import ensure_certificate

    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    ensure_certificate(key, cert, "localhost")
    combined = os.path.join(directory, "haproxy.pem")
    with open(combined, "w") as out:
        for path in (cert, key):
            with open(path) as f:
                out.write(f.read())
    return cert, key, combined


# -- haproxy -----------------------------------------------------------------------------------
HAPROXY_CONFIG = """\
global
    nbthread 1
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend tls
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend backend
backend backend
    server backend 127.0.0.1:{backend}
"""


def haproxy_binary() -> str:
    for directory in ("/usr/sbin", "/usr/local/sbin", *os.environ.get("PATH", "").split(":")):
        path = os.path.join(directory, "haproxy")
        if os.access(path, os.X_OK):
            return path
    raise SystemExit("haproxy is not installed: apt-get install -y haproxy (bench only)")


@contextlib.contextmanager
def haproxy(backend: int, pem: str,
            cpu: Optional[int] = None) -> Iterator[tuple[int, subprocess.Popen]]:
    """haproxy 2.6 in ``mode tcp``, one thread (like one L7R process), TLS terminated with
    the same certificate, forwarding to ``backend``, on ``cpu`` if given; yields (port,
    process)."""
    from qvd.stream.sockets import free_port

    port = free_port()
    directory = tempfile.mkdtemp(prefix="qvd-bench-haproxy-")  # kept when something fails
    path = os.path.join(directory, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(HAPROXY_CONFIG.format(port=port, pem=pem, backend=backend,
                                      maxconn=max_sessions()))
    process = subprocess.Popen([haproxy_binary(), "-db", "-f", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pin(process.pid, cpu)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start (config {path})")
            time.sleep(0.05)
        yield port, process
    finally:
        process.terminate()
        process.wait(10)
    shutil.rmtree(directory)


# -- clients -----------------------------------------------------------------------------------
def client_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def open_stream(port: int, context: Optional[ssl.SSLContext]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="localhost") if context else sock


Opener = Callable[[], socket.socket]  # a new stream to the backend, through what is measured


def command(kind: bytes, size: int) -> bytes:
    return kind + size.to_bytes(8, "big")


def read_exactly(sock: socket.socket, size: int, buffer: memoryview) -> None:
    while size:
        got = sock.recv_into(buffer, min(size, len(buffer)))
        if not got:
            raise ConnectionError(f"closed with {size} bytes still to come")
        size -= got


def upload(opener: Opener, size: int) -> float:
    """MB/s of ``size`` bytes client -> backend (until the backend says it has them all)."""
    block = bytes(CHUNK)
    with opener() as sock:
        started = time.perf_counter()
        sock.sendall(command(b"U", size))
        for _ in range(size // CHUNK):
            sock.sendall(block)
        read_exactly(sock, 1, memoryview(bytearray(1)))
        return size / (time.perf_counter() - started) / 1e6


def download(opener: Opener, size: int) -> float:
    """MB/s of ``size`` bytes backend -> client."""
    buffer = memoryview(bytearray(CHUNK))
    with opener() as sock:
        started = time.perf_counter()
        sock.sendall(command(b"D", size))
        read_exactly(sock, size, buffer)
        return size / (time.perf_counter() - started) / 1e6


def echo_stream(opener: Opener) -> socket.socket:
    """A new stream whose backend echoes everything."""
    sock = opener()
    sock.sendall(command(b"E", 0))
    return sock


def round_trips(sock: socket.socket, count: int, size: int = 64) -> list[float]:
    """Seconds of each of ``count`` sequential ``size``-byte echoes on an echo stream."""
    payload, buffer = os.urandom(size), memoryview(bytearray(size))
    times = []
    for _ in range(count):
        started = time.perf_counter()
        sock.sendall(payload)
        read_exactly(sock, size, buffer)
        times.append(time.perf_counter() - started)
    return times


def negotiated(opener: Opener) -> str:
    """The protocol and cipher the client gets (the same everywhere, or the rows differ)."""
    with opener() as sock:
        return f"{sock.version()} {sock.cipher()[0]}" if isinstance(sock, ssl.SSLSocket) else "none"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- the QVD HTTP client side of a connect --------------------------------------------------------
@dataclass
class Head:
    status: int
    length: int


class HTTPStream:
    """Just enough of a QVD client: send a GET, read its 102s and final head (and body)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def get(self, target: str, headers: str = "") -> Head:
        self.sock.sendall(f"GET {target} HTTP/1.1\r\n{headers}\r\n".encode("ascii"))
        while True:
            head = self.head()
            if head.status != 102:
                self.body(head.length)
                return head

    def head(self) -> Head:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.fill()
        raw, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = raw.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return Head(int(lines[0].split()[1]), length)

    def body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            self.fill()
        data, self.buffer = self.buffer[:length], self.buffer[length:]
        return data

    def fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data


def basic(login: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def full_connect(port: int, context: ssl.SSLContext, login: str, vm_id: int) -> None:
    """New TLS connection, Basic auth, list_of_vm, connect_to_vm to the 101, close."""
    auth = basic(login, "p") + "\r\n"
    with open_stream(port, context) as sock:
        stream = HTTPStream(sock)
        if (status := stream.get("/qvd/list_of_vm", auth).status) != 200:
            raise RuntimeError(f"list_of_vm answered {status}")
        status = stream.get(f"/qvd/connect_to_vm?id={vm_id}",
                            auth + "Connection: Upgrade\r\nUpgrade: QVD/1.0\r\n").status
        if status != 101:
            raise RuntimeError(f"connect_to_vm answered {status}")


def session(port: int, context: ssl.SSLContext, login: str, vm_id: int) -> socket.socket:
    """A new TLS connection, Basic auth, ``connect_to_vm`` to its 101: the raw stream to the
    VM's NX port (the backend), through the real L7R."""
    sock = open_stream(port, context)
    stream = HTTPStream(sock)
    status = stream.get(f"/qvd/connect_to_vm?id={vm_id}",
                        basic(login, "p") + "\r\nConnection: Upgrade\r\nUpgrade: QVD/1.0\r\n").status
    if status != 101 or stream.buffer:
        sock.close()
        raise RuntimeError(f"connect_to_vm answered {status}")
    return sock


def list_login(port: int, context: ssl.SSLContext, credentials: str, vm_id: int) -> None:
    """New TLS connection, Basic auth as ``login:password``, list_of_vm, close (a login)."""
    with open_stream(port, context) as sock:
        auth = basic(*credentials.split(":", 1)) + "\r\n"
        status = HTTPStream(sock).get("/qvd/list_of_vm", auth).status
        if status != 200:
            raise RuntimeError(f"list_of_vm answered {status}")


def ping(port: int, context: ssl.SSLContext, login: str, vm_id: int) -> None:
    """New TLS connection, GET /qvd/ping, close (what a health checker does)."""
    with open_stream(port, context) as sock:
        if (status := HTTPStream(sock).get("/qvd/ping").status) != 200:
            raise RuntimeError(f"ping answered {status}")


def report_threads(run: Callable[[Any], tuple[list[float], int]], items: list[Any]) -> None:
    """``run`` each item in a thread of its own; print the JSON of all the latencies
    (seconds) and the number of failures (what ``run_children`` reads)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(items)) as pool:
        results = list(pool.map(run, items))
    print(json.dumps({"times": [t for times, _ in results for t in times],
                      "failures": sum(f for _, f in results)}), flush=True)


def run_children(specs: list[tuple[Any, ...]],
                 cpu: Optional[int] = None) -> tuple[list[float], int, float]:
    """Start client processes (``ready``, on ``cpu`` if given), say ``go`` to all, and
    gather what they report: (latencies, failures, seconds from go to the last report)."""
    with children(*specs, cpu=cpu) as clients:
        started = time.perf_counter()
        for client in clients:
            client.process.stdin.write("go\n")
            client.process.stdin.flush()
        results = [json.loads(client.process.stdout.readline()) for client in clients]
        elapsed = time.perf_counter() - started
    return ([t for r in results for t in r["times"]], sum(r["failures"] for r in results),
            elapsed)


def clients_role(port: str, cafile: str, mode: str, logins: str, vm_ids: str,
                 count: str) -> None:
    """One client process: a thread per login, each doing ``count`` ``mode``s in a row,
    taking turns on its VMs (``vm_ids``: per login, ids joined by ``:``, so that a VM
    whose session just ended is not asked for at once); prints the JSON list of
    latencies (seconds) and the number of failures."""
    action = {"connect": full_connect, "ping": ping, "list": list_login}[mode]
    context = client_context(cafile)
    pairs = [(login, [int(i) for i in vms.split(":")])
             for login, vms in zip(logins.split(","), vm_ids.split(","))]
    print("ready 0", flush=True)
    sys.stdin.readline()  # go

    def run(pair: tuple[str, list[int]]) -> tuple[list[float], int]:
        login, vms = pair
        times, failures = [], 0
        for turn in range(int(count)):
            started = time.perf_counter()
            try:
                action(int(port), context, login, vms[turn % len(vms)])
            except (OSError, RuntimeError):
                failures += 1
                continue
            times.append(time.perf_counter() - started)
        return times, failures

    report_threads(run, pairs)


def directory_role(url: str, mode: str, people: str, count: str) -> None:
    """One LDAP client process (ldap_logins.py's yardstick): a thread per ``dn|password``
    pair of ``people`` (joined by ``;``), each with its own ldap3 connection doing ``count``
    simple binds as that DN (``bind``), or a search for the entry then the bind
    (``search+bind``, what one ``ldap`` plugin login asks of the directory)."""
    import ldap3

    pairs = [tuple(pair.rsplit("|", 1)) for pair in people.split(";")]
    print("ready 0", flush=True)
    sys.stdin.readline()  # go

    def run(pair: tuple[str, str]) -> tuple[list[float], int]:
        dn, password = pair
        uid = dn.split(",", 1)[0].split("=", 1)[1]
        base = dn.split(",", 1)[1]
        server = ldap3.Server(url, get_info=ldap3.NONE)
        searcher = ldap3.Connection(server, auto_bind=True, read_only=True)
        checker = ldap3.Connection(server, dn, password, read_only=True)
        checker.open()
        times, failures = [], 0
        for _ in range(int(count)):
            started = time.perf_counter()
            if mode == "search+bind":
                searcher.search(base, f"(uid={uid})", attributes=["uid", "uidNumber"])
            if not checker.bind():
                failures += 1
                continue
            times.append(time.perf_counter() - started)
        return times, failures

    report_threads(run, pairs)


# -- server roles ------------------------------------------------------------------------------
class BackendProtocol(asyncio.Protocol):
    """Sink, source or echo, chosen by the stream's first 9 bytes."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = b""
        self.mode = b""
        self.left = 0
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if not self.mode:
            self.head += data
            if len(self.head) < 9:
                return
            self.mode, self.left = self.head[:1], int.from_bytes(self.head[1:9], "big")
            data, self.head = self.head[9:], b""
            if self.mode == b"D":
                self.source()
        if self.mode == b"E":
            self.transport.write(data)
        elif self.mode == b"U" and data:
            self.left -= len(data)
            if self.left == 0:
                self.transport.write(b"K")

    def source(self) -> None:
        block = memoryview(bytes(CHUNK))
        while self.left and not self.paused:
            size = min(self.left, CHUNK)
            self.transport.write(block[:size])
            self.left -= size

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.source()


def backend_role() -> None:
    raise_fd_limit()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(
            BackendProtocol, "127.0.0.1", 0, backlog=4096)
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


def splice_role(backend: str, cert: str, key: str) -> None:
    """The L7R data-path harness (see the module docstring)."""
    raise_fd_limit()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    from qvd.config import Config, parse_properties
    from qvd.l7r.service import listen
    from qvd.l7r.tls import server_context
    from qvd.stream import transport
    from qvd.stream.splice import SpliceEnd

    class SpliceHarness(Factory):
        """Accepted client end waits (paused) until its VM end connects and joins it."""

        def buildProtocol(self, addr: Any) -> SpliceEnd:
            client = SpliceEnd()
            transport.connect(reactor, "127.0.0.1", int(backend),
                              SpliceEnd(client, lambda end: None)).addErrback(
                lambda _: client.transport.loseConnection())
            return client

    config = Config(parse_properties(f"path.l7r.ssl.cert = {cert}\npath.l7r.ssl.key = {key}\n"))
    port = listen(reactor, "127.0.0.1", 0, SpliceHarness(), server_context(config))
    print(f"ready {port.getHost().port}", flush=True)
    reactor.run()


def fakes_role() -> None:
    """FAKE VMA and FAKE NX port, for connect_rate.py (prints both ports)."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from qvd.http.server import QVDHTTPServerFactory
    from qvd.http.simplerpc import SimpleRPCHandler

    vma = SimpleRPCHandler({"x_start": lambda params: "starting",
                            "x_state": lambda params: "listening"})
    rpc = reactor.listenTCP(0, QVDHTTPServerFactory(vma, reactor), 1024, "127.0.0.1")
    nx = reactor.listenTCP(0, Factory.forProtocol(Protocol), 1024, "127.0.0.1")
    print(f"ready {rpc.getHost().port} {nx.getHost().port}", flush=True)
    reactor.run()


def holder_role(port: str, cafile: str, sessions: str, parallel: str, vms: str = "") -> None:
    """Open ``sessions`` TLS echo sessions (``parallel`` handshakes at a time), check each
    with one 64-byte echo, say ``held N``, keep them open until stdin closes.  With
    ``vms`` (a file of ``login vm_id`` lines, one per session) each session is a real
    L7R session first: Basic auth, ``connect_to_vm`` to its 101, then the echo."""
    raise_fd_limit()
    turns = [line.split() for line in open(vms)] if vms else []

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      login: str, vm_id: str) -> None:
        writer.write(f"GET /qvd/connect_to_vm?id={vm_id} HTTP/1.1\r\n{basic(login, 'p')}\r\n"
                     "Connection: Upgrade\r\nUpgrade: QVD/1.0\r\n\r\n".encode("ascii"))
        while (status := int((await reader.readuntil(b"\r\n\r\n")).split()[1])) == 102:
            pass
        if status != 101:
            raise RuntimeError(f"connect_to_vm answered {status}")

    async def hold() -> None:
        context = client_context(cafile)
        gate = asyncio.Semaphore(int(parallel))
        payload = os.urandom(64)

        async def one(n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with gate:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", int(port), ssl=context, server_hostname="localhost")
                if turns:
                    await upgrade(reader, writer, *turns[n])
                writer.write(command(b"E", 0) + payload)
                if await reader.readexactly(64) != payload:
                    raise RuntimeError("echo mismatch")
                return reader, writer

        print("ready 0", flush=True)
        held = await asyncio.gather(*(one(n) for n in range(int(sessions))))
        print(f"held {len(held)}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for _, writer in held:
            writer.close()

    asyncio.run(hold())


ROLES = {"backend": backend_role, "splice": splice_role, "fakes": fakes_role,
         "holder": holder_role, "clients": clients_role, "directory": directory_role}

if __name__ == "__main__":
    ROLES[sys.argv[1]](*sys.argv[2:])
