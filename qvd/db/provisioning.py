"""Users and VMs created on a first login (the ``auto`` plugin, reference §4).

``provision`` runs in one transaction and is retried whole when a concurrent
login of the same new user (or of another one taking the same address) got
there first: the unique constraints ``users (login, tenant_id)``,
``vms (name, user_id)`` and ``vms (ip)`` decide, not timing, so two clients
logging in together create one user and one VM.

The VM address is QVD 4's: the highest free one from the broadcast address of
``vm.network.ip.start``/``vm.network.netmask`` minus one down to the start
(``qa vm new`` uses the same functions).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Generator, Iterable, Optional

import psycopg2
import psycopg2.errorcodes
from twisted.internet import defer

from qvd.config import Config, ConfigError
from qvd.db.pool import Database

ATTEMPTS = 5  # a unique-constraint race costs one retry per racing login


class ProvisioningError(Exception):
    """The user or VM cannot be created (wrong OSF, names or addresses used up)."""


@dataclass(frozen=True)
class Provisioned:
    """What ``provision`` found or made."""

    user_id: int
    user_created: bool
    vm_id: Optional[int] = None  # the VM made now; None when the user had one of the OSF
    vm_name: Optional[str] = None
    vm_ip: Optional[str] = None


@dataclass(frozen=True)
class Request:
    """One first login to provision for."""

    tenant_id: int
    login: str
    osf_id: int
    di_tag: str
    max_vms: int
    first_ip: ipaddress.IPv4Address
    last_ip: ipaddress.IPv4Address


def address_range(config: Config) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """(first, last) VM address: ``vm.network.ip.start`` up to broadcast - 1."""
    start_text = config.get("vm.network.ip.start").strip()
    mask = config.get("vm.network.netmask").strip()
    try:
        start = ipaddress.IPv4Address(start_text)
        network = ipaddress.IPv4Network(f"{start_text}/{mask}", strict=False)
    except ValueError as e:
        raise ConfigError(f"bad vm.network.ip.start/netmask ({start_text}/{mask}): {e}") from None
    return start, network.broadcast_address - 1


def highest_free_address(first: ipaddress.IPv4Address, last: ipaddress.IPv4Address,
                         used: Iterable[Optional[str]]) -> Optional[str]:
    """The highest address from ``last`` down to ``first`` not in ``used``."""
    taken = set(used)
    address = last
    while address >= first:
        if str(address) not in taken:
            return str(address)
        address -= 1
    return None


def provision(db: Database, request: Request) -> defer.Deferred[Provisioned]:
    """The user of ``request`` and, if it has none of the OSF, a new VM; exactly once."""

    @defer.inlineCallbacks
    def attempt(left: int) -> Generator[defer.Deferred[Any], Any, Provisioned]:
        try:
            return (yield db.run_interaction(_provision, request))
        except psycopg2.IntegrityError as e:
            if e.pgcode != psycopg2.errorcodes.UNIQUE_VIOLATION or left <= 1:
                raise
        return (yield attempt(left - 1))

    return attempt(ATTEMPTS)


@defer.inlineCallbacks
def _provision(cursor: Any, request: Request) -> Generator[defer.Deferred[Any], Any, Provisioned]:
    yield cursor.execute("SELECT tenant_id FROM osfs WHERE id = %s", (request.osf_id,))
    osf = cursor.fetchone()
    if osf is None:
        raise ProvisioningError(f"auth.auto.osf_id {request.osf_id} is not an OSF")
    if osf[0] != request.tenant_id:
        raise ProvisioningError(f"auth.auto.osf_id {request.osf_id} belongs to another tenant"
                                f" than the login's ({request.tenant_id})")
    yield cursor.execute(
        "INSERT INTO users (tenant_id, login, password, blocked, language)"
        " VALUES (%s, %s, NULL, FALSE, 'auto')"
        " ON CONFLICT (login, tenant_id) DO NOTHING RETURNING id",
        (request.tenant_id, request.login))
    created = cursor.fetchone()
    if created is None:
        yield cursor.execute("SELECT id FROM users WHERE login = %s AND tenant_id = %s",
                             (request.login, request.tenant_id))
    user_id = created[0] if created else cursor.fetchone()[0]
    yield cursor.execute("SELECT 1 FROM vms WHERE user_id = %s AND osf_id = %s LIMIT 1",
                         (user_id, request.osf_id))
    if cursor.fetchone() is not None:
        return Provisioned(user_id, created is not None)
    candidates = [f"{request.login}-{ix}" for ix in range(1, request.max_vms + 1)]
    yield cursor.execute(
        "SELECT v.name FROM vms v JOIN users u ON u.id = v.user_id"
        " WHERE u.tenant_id = %s AND v.name = ANY(%s)", (request.tenant_id, candidates))
    taken = {row[0] for row in cursor.fetchall()}
    name = next((c for c in candidates if c not in taken), None)
    if name is None:
        raise ProvisioningError(f"too many VM name collisions for {request.login}"
                                f" ({candidates[0]} to {candidates[-1]} are taken)")
    yield cursor.execute("SELECT ip FROM vms WHERE ip IS NOT NULL")
    ip = highest_free_address(request.first_ip, request.last_ip,
                              (row[0] for row in cursor.fetchall()))
    if ip is None:
        raise ProvisioningError(f"no free VM address left between {request.first_ip}"
                                f" and {request.last_ip}")
    yield cursor.execute(
        "INSERT INTO vms (name, user_id, osf_id, di_tag, ip, storage)"
        " VALUES (%s, %s, %s, %s, %s, '') RETURNING id",
        (name, user_id, request.osf_id, request.di_tag, ip))
    vm_id = cursor.fetchone()[0]
    yield cursor.execute("INSERT INTO vm_runtimes (vm_id, vm_state, user_state, blocked)"
                         " VALUES (%s, 'stopped', 'disconnected', FALSE)", (vm_id,))
    yield cursor.execute("INSERT INTO vm_counters (vm_id) VALUES (%s)", (vm_id,))
    return Provisioned(user_id, created is not None, vm_id, name, ip)
