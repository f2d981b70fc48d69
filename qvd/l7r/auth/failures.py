"""Failed-login counts shared by every L7R process of a node, in a memory-mapped file.

The L7R's worker processes (``l7r.processes``) and an L7R beside them must
see the same counts, or each process would multiply an attacker's budget.
The counts live in a fixed-size open-addressing table in a file under
``path.run``: a slot per key (a keyed BLAKE2b digest of it), found within a
short probe window; when the window is full, the least recently failed slot
is reused, so memory stays bounded under a spray.  Each operation holds an
exclusive ``flock`` for a few microseconds; nothing else is ever waited for.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

MAGIC = b"QVDTHR01"
HEADER = struct.Struct("<8sI16s")  # magic, slot count, digest key
SLOT = struct.Struct("<16sdIdd")  # digest, window start, failures, locked until, last failure
PROBES = 16  # slots looked at for one key
EMPTY = bytes(16)


@dataclass
class Failures:
    """One key's failures in the current window."""

    since: float  # first failure of the window
    count: int
    locked_until: float
    last: float

    def expires(self, window: float) -> float:
        return max(self.since + window, self.locked_until)


class FailureTable:
    """Failure counts by key in ``path``; ``namespace`` keeps the counts of different
    nodes (QVD-DBs) sharing one file apart.

    The process that creates the file sizes it for ``slots`` keys; later ones use it
    as it is (a running process's map must never shrink), so a new size takes effect
    once the file is gone (``path.run`` is emptied at boot).
    """

    def __init__(self, path: str, slots: int, namespace: str):
        self.namespace = namespace.encode("utf-8")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            if not self._valid_header():
                size = HEADER.size + max(PROBES, slots) * SLOT.size
                os.ftruncate(self._fd, size)
                os.pwrite(self._fd, HEADER.pack(MAGIC, max(PROBES, slots),
                                                secrets.token_bytes(16)), 0)
            _, self.slots, self._digest_key = HEADER.unpack(os.pread(self._fd, HEADER.size, 0))
        self._map = mmap.mmap(self._fd, HEADER.size + self.slots * SLOT.size)

    def _valid_header(self) -> bool:
        size = os.fstat(self._fd).st_size
        if size < HEADER.size:
            return False
        magic, slots, _ = HEADER.unpack(os.pread(self._fd, HEADER.size, 0))
        return magic == MAGIC and slots >= PROBES and size == HEADER.size + slots * SLOT.size

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    # -- operations ----------------------------------------------------------------------
    def get(self, key: str, now: float, window: float) -> Optional[Failures]:
        """The key's failures, if any are still within ``window`` or its lock."""
        digest = self._digest(key)
        with self._locked():
            for offset in self._probe(digest):
                stored, *values = SLOT.unpack_from(self._map, offset)
                if stored == digest:
                    entry = Failures(*values)
                    return entry if entry.expires(window) > now else None
        return None

    def add(self, key: str, now: float, window: float, limit: int) -> Failures:
        """One more failure for ``key``; locked for ``window`` once it reaches ``limit``."""
        digest = self._digest(key)
        with self._locked():
            offset, entry = self._slot_for(digest, now, window)
            if entry is None or entry.expires(window) <= now:
                entry = Failures(since=now, count=0, locked_until=0.0, last=now)
            entry.count += 1
            entry.last = now
            if entry.count >= limit and entry.locked_until <= now:
                entry.locked_until = now + window
            SLOT.pack_into(self._map, offset, digest, entry.since, entry.count,
                           entry.locked_until, entry.last)
        return entry

    def forget(self, key: str) -> None:
        digest = self._digest(key)
        with self._locked():
            for offset in self._probe(digest):
                if SLOT.unpack_from(self._map, offset)[0] == digest:
                    SLOT.pack_into(self._map, offset, EMPTY, 0.0, 0, 0.0, 0.0)

    def __len__(self) -> int:
        """Slots in use (expired ones included until they are reused)."""
        return sum(1 for index in range(self.slots)
                   if self._map[self._offset(index):self._offset(index) + 16] != EMPTY)

    # -- layout --------------------------------------------------------------------------
    def _digest(self, key: str) -> bytes:
        digest = hashlib.blake2b(self.namespace + b"\0" + key.encode("utf-8"),
                                 key=self._digest_key, digest_size=16).digest()
        return digest if digest != EMPTY else b"\1" + digest[1:]

    def _offset(self, index: int) -> int:
        return HEADER.size + index * SLOT.size

    def _probe(self, digest: bytes) -> Iterator[int]:
        start = int.from_bytes(digest[:8], "little") % self.slots
        for step in range(PROBES):
            yield self._offset((start + step) % self.slots)

    def _slot_for(self, digest: bytes, now: float,
                  window: float) -> tuple[int, Optional[Failures]]:
        """The key's slot; else a free or expired one; else the least recently failed."""
        reusable: Optional[tuple[float, int]] = None
        for offset in self._probe(digest):
            stored, *values = SLOT.unpack_from(self._map, offset)
            if stored == digest:
                return offset, Failures(*values)
            entry = Failures(*values)
            rank = -1.0 if stored == EMPTY or entry.expires(window) <= now else entry.last
            if reusable is None or rank < reusable[0]:
                reusable = (rank, offset)
        assert reusable is not None
        return reusable[1], None

    def _locked(self) -> "_FileLock":
        return _FileLock(self._fd)


class _FileLock:
    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
