"""The golden transcripts of ``protocols/*.md``: one connection's bytes each way, as the
conformance tests replay them (``l7r-http.md``, ``simplerpc.md``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

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
