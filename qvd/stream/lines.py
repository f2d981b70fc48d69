"""Child process output as whole lines, for the protocols that read it line by line."""

from __future__ import annotations

MAX_LINE = 1 << 20  # bytes a line may reach before it is passed on as it is


class LineSplitter:
    """Bytes in, whole ``\\n``-ended lines out (without the ``\\n``).

    ``partial`` holds the unfinished last line; one that grows past ``limit``
    is handed out as it is, so a chatty child cannot make us hold unbounded
    memory.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self.partial = (self.partial + data).split(b"\n")
        if len(self.partial) > self.limit:
            lines.append(self.partial)
            self.partial = b""
        return lines
