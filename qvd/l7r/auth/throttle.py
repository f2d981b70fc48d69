"""Brute-force throttling of logins, per client address and per login (ours).

QVD 4 lets a client guess passwords as fast as the L7R answers.  Here each
L7R process counts failed authentications per client address (an IPv6
client by its /64, which one attacker usually owns whole) and per login
(tenant id + normalised login).  Configuration (read on every use, so a
``qa config set`` applies at once):

``l7r.auth.throttle.max_failures`` (default 10)
    failures within the window that lock an address or a login; 0 disables
    throttling.
``l7r.auth.throttle.window`` (default 60)
    seconds: failures older than this are forgotten, and a lock lasts this long.
``l7r.auth.throttle.max_entries`` (default 100000)
    addresses and logins remembered at once; past it the least recently
    failed are forgotten first, so memory stays bounded under a spray attack.

A locked address or login is refused (401) without running any plugin and
without counting an attempt.  A success forgets only its own login's
failures: it never clears an address, so one valid account cannot launder
guesses against others.  Counts are per process: N processes sharing the
port allow N times the budget.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qvd.config import Config

log = Logger()

MAX_FAILURES_KEY = "l7r.auth.throttle.max_failures"
WINDOW_KEY = "l7r.auth.throttle.window"
MAX_ENTRIES_KEY = "l7r.auth.throttle.max_entries"


def address_key(peer: str) -> tuple[str, str]:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # not an IP (a UNIX socket, a test transport): as given
        return ("address", peer)
    if address.version == 6:
        return ("address", str(ipaddress.ip_network(f"{address}/64", strict=False)))
    return ("address", str(address))


def login_key(tenant_id: int, login: str) -> tuple[str, int, str]:
    return ("login", tenant_id, login)


@dataclass
class _Failures:
    since: float  # first failure of the current window
    count: int = 0
    locked_until: float = 0.0

    def expires(self, window: float) -> float:
        return max(self.since + window, self.locked_until)


class Throttle:
    """Failure counts by key, driven by ``clock`` (least recently failed first)."""

    def __init__(self, config: Config, clock: IReactorTime):
        self.config = config
        self.clock = clock
        self._entries: OrderedDict[Hashable, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def refuses(self, key: Hashable) -> bool:
        """True while ``key`` is locked."""
        entry = self._entries.get(key)
        return entry is not None and entry.locked_until > self.clock.seconds()

    def failed(self, key: Hashable) -> None:
        """Count one failure for ``key``; lock it when it reaches the limit."""
        limit = self.config.get_int(MAX_FAILURES_KEY)
        if limit <= 0:
            return
        window = self.config.get_float(WINDOW_KEY)
        now = self.clock.seconds()
        entry = self._entries.pop(key, None)
        if entry is None or entry.expires(window) <= now:
            entry = _Failures(since=now)
        entry.count += 1
        if entry.count >= limit and entry.locked_until <= now:
            entry.locked_until = now + window
            log.warn("too many failed logins for {key}: refused for {window:g}s",
                     key=key, window=window)
        self._entries[key] = entry
        self._prune(now, window)

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def _prune(self, now: float, window: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires(window) > now:
                break
            self._entries.popitem(last=False)
        excess = len(self._entries) - max(1, self.config.get_int(MAX_ENTRIES_KEY))
        for _ in range(excess):
            self._entries.popitem(last=False)
