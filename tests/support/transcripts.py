"""The golden transcripts of ``protocols/*.md``: one connection's bytes each way, as the
conformance tests replay them (``l7r-http.md``, ``simplerpc.md``, ``slave.md``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol

from tests.support.paths import ROOT

TRANSCRIPT = re.compile(r"^```transcript ([\w-]+)( close)?\n(.*?)^```", re.M | re.S)
FIXTURE = re.compile(r"^```fixture\n(.*?)^```", re.M | re.S)
_ESCAPE = re.compile(r"\\(r|n|\\)")


def unescape(text: str) -> bytes:
    """A transcript line's text as bytes: ``\\r``, ``\\n`` and ``\\\\`` are the escapes."""
    return _ESCAPE.sub(lambda m: {"r": "\r", "n": "\n", "\\": "\\"}[m.group(1)], text).encode()


@dataclass
class Transcript:
    """One connection: (client text, expected server text) exchanges, in order, still
    escaped; ``closes`` if the server must close the connection after the last one."""

    name: str
    exchanges: list[tuple[str, str]]
    closes: bool

    def whole(self) -> tuple[bytes, bytes]:
        """Everything the client sends and everything the server answers, as bytes."""
        return (unescape("".join(sent for sent, _ in self.exchanges)),
                unescape("".join(expected for _, expected in self.exchanges)))


def document(name: str) -> str:
    with open(os.path.join(ROOT, "protocols", name)) as f:
        return f.read()


def transcripts(name: str) -> dict[str, Transcript]:
    """Every transcript of ``protocols/<name>`` by its name."""
    found: dict[str, Transcript] = {}
    for match in TRANSCRIPT.finditer(document(name)):
        title = match.group(1)
        if title in found:
            raise ValueError(f"transcript {title} twice in {name}")
        exchanges: list[tuple[str, str]] = []
        previous = "S"
        for line in match.group(3).splitlines():
            side, sep, data = line.partition(": ")
            if side not in ("C", "S") or not sep:
                raise ValueError(f"bad line {line!r} in transcript {title}")
            if side == "C" and previous == "S":
                exchanges.append(("", ""))
            sent, expected = exchanges[-1]
            exchanges[-1] = (sent + data, expected) if side == "C" else (sent, expected + data)
            previous = side
        found[title] = Transcript(title, exchanges, bool(match.group(2)))
    return found


def fixture(name: str) -> list[str]:
    """The lines of the document's fixture block (``qa ...`` or ``sql ...``)."""
    match = FIXTURE.search(document(name))
    assert match is not None, f"no fixture block in {name}"
    return [line for line in match.group(1).splitlines() if line.strip()]


class Replay(Protocol):
    """Sends the client side; done when the expected byte count arrived or the peer closed."""

    def __init__(self, sent: bytes, expected_length: int, wait_for_close: bool):
        self.sent = sent
        self.expected_length = expected_length
        self.wait_for_close = wait_for_close
        self.received = b""
        self.done: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write(self.sent)

    def dataReceived(self, data):
        self.received += data
        if not self.wait_for_close and len(self.received) >= self.expected_length:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.received)


class ReplaysTranscripts:
    """A ``TestCase`` mix-in for a server's transcripts (``TRANSCRIPTS``): each one needs
    its own test (``test_<name with _ for ->``), and ``replay`` compares the server's
    answer byte for byte; ``connect`` gives the client side its connection."""

    TRANSCRIPTS: dict[str, Transcript]

    def connect(self, peer: Replay) -> Deferred:
        raise NotImplementedError

    @inlineCallbacks
    def replay(self, name: str) -> Any:
        transcript = self.TRANSCRIPTS[name]
        (sent, expected), closes = transcript.whole(), transcript.closes
        peer = Replay(sent, len(expected), closes)
        yield self.connect(peer)
        received = yield peer.done.addTimeout(10, reactor)
        self.assertEqual(received, expected)  # type: ignore[attr-defined]

    def test_all_transcripts_are_replayed(self) -> None:
        names = {n[len("test_") :].replace("_", "-") for n in dir(self) if n.startswith("test_")}
        self.assertLessEqual(set(self.TRANSCRIPTS), names)  # type: ignore[attr-defined]


def replays(name: str, given: Optional[Callable[[Any], object]] = None,
            then: Optional[Callable[[Any], object]] = None) -> Callable[[Any], Deferred]:
    """A test method for a ``replay``-ing TestCase: ``given(self)`` sets the scene, the
    transcript ``name`` is replayed, ``then(self)`` checks what it left behind."""
    @inlineCallbacks
    def test(self: Any) -> Any:
        if given is not None:
            given(self)
        yield self.replay(name)
        if then is not None:
            then(self)
    return test
