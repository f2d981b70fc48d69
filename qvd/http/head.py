"""Message heads of the QVD HTTP dialect, shared by the server and the client.

A head is a start line plus header lines up to a blank line.  Lines end in
LF or CRLF (QVD's C client sends bare LF); blank lines before the start line
are skipped; a line starting with a blank continues the previous header.
The parser is incremental and bounded, so a peer can never make us buffer
more than the configured limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Optional

VERSION = "HTTP/1.1"  # the only version the dialect speaks, both ways
_TOKEN = re.compile(rb"[!#$%&'*+\-.0-9A-Za-z_]+")


class HeadError(Exception):
    """A head we refuse; ``status`` is what a server answers before closing."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds on what one head may cost us (bytes and counts)."""

    max_line: int = 8192
    max_headers: int = 64
    max_head: int = 32768


class Headers:
    """Ordered header list; lookups ignore case (the original is stricter)."""

    def __init__(self, pairs: Optional[list[tuple[str, str]]] = None):
        self._pairs: list[tuple[str, str]] = list(pairs or [])

    def add(self, name: str, value: str) -> None:
        self._pairs.append((name, value))

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        folded = name.lower()
        for key, value in reversed(self._pairs):
            if key.lower() == folded:
                return value
        return default

    def __len__(self) -> int:
        return len(self._pairs)

    def _continue_last(self, more: str) -> None:
        name, value = self._pairs[-1]
        self._pairs[-1] = (name, f"{value} {more}" if value else more)


@dataclass
class Head:
    start_line: str
    headers: Headers


class HeadParser:
    """Feed bytes; get a ``Head`` once its blank line has arrived.

    Bytes after the blank line stay in ``buffer`` for whoever reads next
    (the next pipelined request, a body, or a raw stream after 101).
    """

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self.buffer = b""
        self._reset()

    def _reset(self) -> None:
        self._start: Optional[str] = None
        self._headers = Headers()
        self._size = 0

    @property
    def started(self) -> bool:
        """True once any byte of a head (not just blank lines) has arrived."""
        return self._start is not None or bool(self.buffer.lstrip(b"\r\n"))

    def feed(self, data: bytes) -> Optional[Head]:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                self._check_partial()
                return None
            line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            head = self._line(line, end + 1)
            if head is not None:
                return head

    def _check_partial(self) -> None:
        if len(self.buffer) > self.limits.max_line:
            raise self._too_long()
        if self._size + len(self.buffer) > self.limits.max_head:
            raise HeadError(431, "head too large")

    def _too_long(self) -> HeadError:
        if self._start is None:
            return HeadError(400, "start line too long")
        return HeadError(431, "header line too long")

    def _line(self, line: bytes, raw_length: int) -> Optional[Head]:
        if len(line) > self.limits.max_line:
            raise self._too_long()
        if self._start is None:
            if line:
                self._start = _decode(line)
                self._size = raw_length
            return None
        self._size += raw_length
        if self._size > self.limits.max_head:
            raise HeadError(431, "head too large")
        if not line:
            head = Head(self._start, self._headers)
            self._reset()
            return head
        if line[:1] in (b" ", b"\t"):
            if not len(self._headers):
                raise HeadError(400, "continuation line before any header")
            self._headers._continue_last(_decode(line).strip())
            return None
        name, sep, value = line.partition(b":")
        name = name.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise HeadError(400, "malformed header line")
        if len(self._headers) >= self.limits.max_headers:
            raise HeadError(431, "too many header lines")
        self._headers.add(_decode(name), _decode(value).strip())
        return None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise HeadError(400, "non-ASCII bytes in head") from None


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def format_head(start_line: str, headers: list[tuple[str, str]]) -> bytes:
    """A head as the original writes it: CRLF line ends, nothing added."""
    lines = [start_line] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
