"""Logins and sessions of the API, kept in QVD-DB so they outlive a restart.

A request with ``login`` and ``password`` opens a new session (QVD 4 does so
on every such request); any other request names its session by ``sid``
(query or form parameter, the ``sid`` cookie, or, unlike QVD 4, a ``sid``
key of a JSON body, where ``qa4`` sends it).  A session works only from the
address that opened it and lasts ``api.session.timeout`` seconds (ours;
QVD 4 hard-wired 3600) after its last use.  Failed logins are throttled per
client address and per login like the L7R's (``l7r.auth.throttle.*``).
"""

from __future__ import annotations

import secrets
from typing import Any, Generator, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from qvd.api.errors import APIError
from qvd.config import Config
from qvd.db import administrators
from qvd.db.administrators import Administrator, Session
from qvd.db.pool import Database
from qvd.l7r.auth.throttle import Throttle, address_key
from qvd.passwords import SALT_KEY, check_password

TIMEOUT_KEY = "api.session.timeout"
DEFAULT_TIMEOUT = 3600
EXTEND_STEP = 60  # seconds: a session's expiry is rewritten at most once a minute
ADMINS = -1  # the throttle's tenant id for administrators (tenant -1 has no users)


class LoginFailed(APIError):
    """A refused login or session, with what the audit row needs to know."""

    def __init__(self, code: int, admin: Optional[Administrator] = None):
        super().__init__(code)
        self.admin = admin


class Sessions:
    def __init__(self, config: Config, database: Database, clock: IReactorTime):
        self.config = config
        self.database = database
        self.clock = clock
        self.throttle = Throttle(config, clock)

    def timeout(self) -> int:
        return max(60, self.config.get_int(TIMEOUT_KEY, default=DEFAULT_TIMEOUT))

    def multitenant(self) -> bool:
        return self.config.get_bool("wat.multitenant", default=False)

    @defer.inlineCallbacks
    def login(self, name: Any, password: Any, tenant: Any,
              peer: str) -> Generator[defer.Deferred[Any], Any, tuple[Administrator, str]]:
        """Check credentials and open a session: (administrator, sid)."""
        if not all(isinstance(v, str) for v in (name, password)) or not name or not password:
            raise LoginFailed(3200)
        if tenant is not None and not isinstance(tenant, str):
            raise LoginFailed(3200)
        multitenant = self.multitenant()
        if multitenant and not tenant:
            raise LoginFailed(3200)
        address, account = address_key(peer), f"admin {tenant or ''}\0{name}"
        if (self.throttle.refuses_address(address)
                or self.throttle.refuses_login(address, ADMINS, account)):
            raise LoginFailed(3200)
        found = yield administrators.admins_named(self.database, name,
                                                  tenant if multitenant else None)
        if not multitenant:
            found = [a for a in found if not a.superadmin or a.recovery]
        if len(found) > 1:
            raise APIError(1100, info="several administrators match this login")
        salt = self.config.get(SALT_KEY)
        admin = found[0] if found else None
        if admin is None or not check_password(password, admin.password, salt):
            self.throttle.failed(address, ADMINS, account)
            raise LoginFailed(3200, admin)
        self.throttle.succeeded(address, ADMINS, account)
        if admin.tenant_blocked:
            raise LoginFailed(3500, admin)
        sid = secrets.token_hex(20)
        yield administrators.create_session(
            self.database, Session(sid, admin.id, peer, self._now() + self.timeout()))
        return admin, sid

    @defer.inlineCallbacks
    def resume(self, sid: Any, peer: str) -> Generator[defer.Deferred[Any], Any, Administrator]:
        """The administrator of a live session from this address, its expiry extended."""
        if not isinstance(sid, str) or not sid or len(sid) > 40:
            raise LoginFailed(3100 if not sid else 3200)
        found = yield administrators.find_session(self.database, sid)
        if found is None or (found[0].ip is not None and found[0].ip != peer):
            raise LoginFailed(3200)
        session, admin = found
        now = self._now()
        if session.expires < now:
            yield administrators.delete_session(self.database, sid)
            raise LoginFailed(3300)
        if admin is None:
            raise LoginFailed(3200)
        if admin.tenant_blocked:
            raise LoginFailed(3500, admin)
        expires = now + self.timeout()
        if expires - session.expires >= EXTEND_STEP:
            try:
                yield administrators.extend_session(self.database, sid, expires)
            except Exception:
                raise LoginFailed(3400, admin) from None
        return admin

    def logout(self, sid: str) -> defer.Deferred[None]:
        return administrators.delete_session(self.database, sid)

    def forget_expired(self) -> defer.Deferred[None]:
        return administrators.delete_expired_sessions(self.database, self._now())

    def _now(self) -> int:
        return int(self.clock.seconds())
