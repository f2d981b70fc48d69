"""QVD's C client (libqvdclient) reading the answer to its ``connect_to_vm``, reproduced
over real TLS, record by record, for the tests (reference §5.3, issue 16).

What ``_qvd_switch_protocols`` (theqvd/qvd-libqvdclient-c, ``qvdclientcore.c``) does,
and so what this does:

* the request has bare-LF lines and unescaped parameters, on a TLS connection of
  its own;
* each read is one ``curl_easy_recv``: one ``SSL_read``, so at most one TLS record;
* it waits with ``select`` on a descriptor set filled once, before the loop, with a
  1 s timeout; Linux empties the set when ``select`` times out and the client never
  fills it again, so after one second without data it never reads the socket again;
* a read holding ``HTTP/1.1 101`` ends the wait; one holding ``HTTP/1.1 102`` is
  progress (the text after ``\\r\\nX-QVD-VM-Info: ``);
* a read holding ``HTTP/1.1 2``..``5`` is an error: it then waits (``select``, no
  timeout) for *more* data before it checks whether the body is complete (the bytes
  from the blank line on reach ``Content-Length``), and an end of stream also ends
  that wait;
* 600 s overall.

Blocking: run it in a thread when the L7R runs in the test's reactor.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

BUFFER_SIZE = 32768  # CURL_MAX_WRITE_SIZE * 2
SELECT_TIMEOUT = 1.0
OVERALL = 600.0
PROGRESS = b"\r\nX-QVD-VM-Info: "
ERROR_STATUS = re.compile(rb"HTTP/1\.1 ([2-5]\d\d)")
CONTENT_LENGTH = re.compile(rb"\r\nContent-Length: (\d+)", re.I)


@dataclass
class Answer:
    """How the wait ended: ``upgraded`` (101), ``error`` (status, body), ``closed`` (the
    server closed before any answer) or ``hung`` (the client would still be waiting);
    ``by_close``: an error the client only took as complete because the stream ended."""

    outcome: str
    status: Optional[int] = None
    body: bytes = b""
    by_close: bool = False
    progress: list[str] = field(default_factory=list)
    records: int = 0  # reads that returned data
    stream: Optional[ssl.SSLSocket] = None  # after a 101, when asked to keep it


def strict_context(cafile: str) -> ssl.SSLContext:
    """A client context that tells a ``close_notify`` (recv gives b"") from a TCP end
    without one (``SSLEOFError``): OpenSSL does, Python's defaults hide it."""
    context = ssl.create_default_context(cafile=cafile)
    context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    return context


def request(vm_id: int, credentials: str, geometry: str = "800x600") -> bytes:
    """The request as ``_qvd_switch_protocols`` formats it (its defaults but the size)."""
    digest = base64.b64encode(credentials.encode()).decode()
    return (f"GET /qvd/connect_to_vm?id={vm_id}&qvd.client.os=linux&qvd.client.geometry="
            f"{geometry}&qvd.client.link=adsl&qvd.client.keyboard=pc%2F105"
            f"&qvd.client.fullscreen=0 HTTP/1.1\nAuthorization: Basic {digest}\n"
            "Connection: Upgrade\nUpgrade: QVD/1.0\n\n").encode("ascii")


def connect_to_vm(port: int, cafile: str, vm_id: int, credentials: str,
                  limit: float = 30.0, geometry: str = "800x600", keep: bool = False) -> Answer:
    """One ``connect_to_vm`` as the C client waits for it; ``limit`` stands in for its
    600 s (a client still waiting then is ``hung``).  With ``keep``, an upgraded
    stream is handed over open (``Answer.stream``) instead of closed."""
    context = strict_context(cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=limit)
    sock = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    try:
        sock.sendall(request(vm_id, credentials, geometry))
        answer = _switch_protocols(sock, time.monotonic() + min(limit, OVERALL))
    except BaseException:
        sock.close()
        raise
    if keep and answer.outcome == "upgraded":
        answer.stream = sock
    else:
        sock.close()
    return answer


def relay(stream: ssl.SSLSocket, local: socket.socket, stop: threading.Event) -> None:
    """Pump bytes between the upgraded stream and the local NX end until either closes
    or ``stop`` is set (what ``_qvd_client_loop`` does with its in-process nxcomp)."""
    ends = {stream: local, local: stream}
    try:
        while not stop.is_set():
            for reader in select.select(list(ends), [], [], 0.2)[0]:
                data = reader.recv(BUFFER_SIZE)
                if not data:
                    return
                ends[reader].sendall(data)
    except (ssl.SSLError, OSError):
        return
    finally:
        stream.close()
        local.close()


def read_to_end(stream: ssl.SSLSocket) -> tuple[list[bytes], str]:
    """Every read (one TLS record each) until the end, and how the stream ended:
    ``close_notify``, ``no close_notify`` (a TCP end under the TLS stream) or ``reset``."""
    reads = []
    try:
        while chunk := stream.recv(65536):
            reads.append(chunk)
        return reads, "close_notify"
    except ssl.SSLEOFError:
        return reads, "no close_notify"
    except OSError:
        return reads, "reset"


def _switch_protocols(sock: ssl.SSLSocket, deadline: float) -> Answer:
    answer = Answer("hung")
    watched: list[socket.socket] = [sock]
    while time.monotonic() < deadline:
        if not select.select(watched, [], [], SELECT_TIMEOUT)[0]:
            watched = []  # the set select emptied on its timeout; never filled again
            continue
        data = _read(sock)
        if not data:
            answer.outcome = "closed"
            return answer
        answer.records += 1
        if b"HTTP/1.1 101" in data:
            answer.outcome, answer.status = "upgraded", 101
            return answer
        if b"HTTP/1.1 102" in data and PROGRESS in data:
            answer.progress.append(
                data.split(PROGRESS, 1)[1].split(b"\r\n", 1)[0].decode("ascii", "replace"))
        status = ERROR_STATUS.search(data)
        if status:
            return _error(sock, data, answer, deadline)
    return answer


def _error(sock: ssl.SSLSocket, data: bytes, answer: Answer, deadline: float) -> Answer:
    """After an error head: read more, *then* look whether the body is all there."""
    found = CONTENT_LENGTH.search(data)
    length = int(found.group(1)) if found else -1
    while len(data) < BUFFER_SIZE:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            return answer  # hung
        more = _read(sock)
        data += more
        blank = data.find(b"\r\n\r\n")
        if not more or (blank >= 0 and len(data) - blank >= length):
            status = ERROR_STATUS.search(data)
            answer.outcome, answer.by_close = "error", not more
            answer.status = int(status.group(1))
            answer.body = data[data.find(b"\r\n\r\n", status.end()) + 4:]
            return answer
    return answer


def _read(sock: ssl.SSLSocket) -> bytes:
    """One ``curl_easy_recv``: at most one TLS record; b"" at the end of the stream."""
    try:
        return sock.recv(BUFFER_SIZE)
    except (ssl.SSLError, OSError):
        return b""
