"""Brute-force throttling of logins, shared by every L7R process of the node (ours).

QVD 4 lets a client guess passwords as fast as the L7R answers.  Here failed
authentications are counted, for all L7R processes of the node together
(``failures.FailureTable`` in ``path.run``), under three keys:

* the client address and the login together (tenant id + normalised login):
  one attacker guessing one account is stopped after
  ``l7r.auth.throttle.max_failures`` (default 10) failures;
* the login, from any address: ``l7r.auth.throttle.max_failures.login``
  (default 30) stops a guess spread over many addresses;
* the client address (an IPv6 client by its /64, which one attacker usually
  owns whole), whatever the login: ``l7r.auth.throttle.max_failures.address``
  (default 100) stops a spray of one guess per account.  It is much higher
  than the others so that an office behind one NAT address is not locked out
  by one user's typos: failures for one login never refuse another login
  below it.

``l7r.auth.throttle.window`` (default 60): failures older than this are
forgotten, and a lock lasts this long.  ``l7r.auth.throttle.max_entries``
(default 100000): keys remembered at once (the least recently failed go
first).  Limits are read on every use, so ``qa config set`` applies at once;
0 as ``max_failures`` disables throttling.  A locked key is refused (401)
without checking the password and without counting an attempt.  A success
forgets its own login's failures, never its address's, so one valid
account cannot launder guesses against others.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qvd.config import Config
from qvd.l7r.auth.failures import FailureTable

log = Logger()

MAX_FAILURES_KEY = "l7r.auth.throttle.max_failures"
LOGIN_MAX_FAILURES_KEY = "l7r.auth.throttle.max_failures.login"
ADDRESS_MAX_FAILURES_KEY = "l7r.auth.throttle.max_failures.address"
WINDOW_KEY = "l7r.auth.throttle.window"
MAX_ENTRIES_KEY = "l7r.auth.throttle.max_entries"


def address_key(peer: str) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # not an IP (a UNIX socket, a test transport): as given
        return f"address {peer}"
    if address.version == 6:
        return f"address {ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"address {address}"


def login_key(tenant_id: int, login: str) -> str:
    return f"login {tenant_id} {login}"


def pair_key(address: str, tenant_id: int, login: str) -> str:
    return f"{address} {login_key(tenant_id, login)}"


def table_path(config: Config) -> str:
    return os.path.join(config.get("path.run"), "l7r", "auth-failures")


def namespace(config: Config) -> str:
    """What tells this node's QVD-DB apart from another's using the same ``path.run``."""
    return "/".join(config.get(key, default="") for key in
                    ("database.host", "database.port", "database.name", "nodename"))


class Throttle:
    """Failure counts of one client address, on ``clock``, in the node's shared table."""

    def __init__(self, config: Config, clock: IReactorTime, table: Optional[FailureTable] = None):
        self.config = config
        self.clock = clock
        self.table = table or FailureTable(table_path(config),
                                           config.get_int(MAX_ENTRIES_KEY), namespace(config))

    def close(self) -> None:
        self.table.close()

    @property
    def enabled(self) -> bool:
        return self.config.get_int(MAX_FAILURES_KEY) > 0

    def _window(self) -> float:
        return self.config.get_float(WINDOW_KEY)

    def _locked(self, key: str) -> bool:
        entry = self.table.get(key, self.clock.seconds(), self._window())
        return entry is not None and entry.locked_until > self.clock.seconds()

    def refuses_address(self, address: str) -> bool:
        """True while the address as a whole is locked (a spray)."""
        return self.enabled and self._locked(address)

    def refuses_login(self, address: str, tenant_id: int, login: str) -> bool:
        """True while this login is locked, from this address or from everywhere."""
        return self.enabled and (self._locked(pair_key(address, tenant_id, login))
                                 or self._locked(login_key(tenant_id, login)))

    def failed(self, address: str, tenant_id: Optional[int] = None,
               login: Optional[str] = None) -> None:
        """One failure from ``address`` (for ``login``, when it was known)."""
        if not self.enabled:
            return
        limits = [(address, self.config.get_int(ADDRESS_MAX_FAILURES_KEY))]
        if tenant_id is not None and login is not None:
            limits += [(pair_key(address, tenant_id, login), self.config.get_int(MAX_FAILURES_KEY)),
                       (login_key(tenant_id, login), self.config.get_int(LOGIN_MAX_FAILURES_KEY))]
        now, window = self.clock.seconds(), self._window()
        for key, limit in limits:
            entry = self.table.add(key, now, window, max(1, limit))
            if entry.count == max(1, limit):
                log.warn("too many failed logins for {key}: refused for {window:g}s",
                         key=key, window=window)

    def succeeded(self, address: str, tenant_id: int, login: str) -> None:
        """The login's own failures are forgotten (its address's are not)."""
        self.table.forget(pair_key(address, tenant_id, login))
        self.table.forget(login_key(tenant_id, login))
