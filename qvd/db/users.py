"""The ``tenants`` and ``users`` tables as a login reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer

from qvd.db.pool import Database
from qvd.db.rows import first


@dataclass(frozen=True)
class Tenant:
    id: int
    blocked: Optional[bool]  # NULL is not blocked


def tenant_by_name(db: Database, name: str) -> defer.Deferred[Optional[Tenant]]:
    """The tenant called exactly ``name``."""
    return db.run_read("SELECT id, blocked FROM tenants WHERE name = %s",
                        (name,)).addCallback(first(Tenant))


@dataclass(frozen=True)
class User:
    id: int
    blocked: bool
    password: Optional[str]  # QVD's hash; NULL for users of other plugins


def user_by_login(db: Database, tenant_id: int, login: str) -> defer.Deferred[Optional[User]]:
    return db.run_read(
        "SELECT id, blocked, password FROM users WHERE tenant_id = %s AND login = %s",
        (tenant_id, login)).addCallback(first(User))


@dataclass(frozen=True)
class UserOfTenant:
    login: str
    blocked: bool
    tenant_id: int
    tenant: str
    tenant_blocked: Optional[bool]


def user_with_tenant(db: Database, user_id: int) -> defer.Deferred[Optional[UserOfTenant]]:
    return db.run_read(
        "SELECT u.login, u.blocked, t.id, t.name, t.blocked FROM users u"
        " JOIN tenants t ON t.id = u.tenant_id WHERE u.id = %s",
        (user_id,)).addCallback(first(UserOfTenant))
