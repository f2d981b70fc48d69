"""The L7R's authentication: credentials through the plugin chain (reference §2.3-2.5).

Differences from QVD 4, on purpose (DESIGN.md):

* the *normalised* tenant name is looked up (QVD 4 used the raw text), and
  the login's case sensitivity is read for the login's own tenant (QVD 4
  read tenant 1's);
* the invalid tenant ``-`` (id -1) is refused like the supertenant;
* Bearer tokens honour ``multi_use`` and ``vm_id``, and a token of a
  blocked user or of a user in a blocked tenant is refused;
* failures are throttled per login, per (address, login) and, far higher, per
  address, across every L7R process of the node (``throttle``);
* an exception in a plugin is logged and becomes ``AuthError`` (a 500 with a
  generic body), never the exception's text.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Generator, Iterable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from qvd.config import Config
from qvd.db import hosts, users
from qvd.db.pool import Database
from qvd.reactor import default_reactor
from qvd.http.head import Headers
from qvd.l7r.auth.chain import Chain, Plugins
from qvd.l7r.auth.credentials import Basic, extra_headers, parse_authorization
from qvd.l7r.auth.interface import (
    USER_NAME_PARAM, Auth, AuthError, AuthServices, IAuthPluginFactory, PluginError, Throttled,
    Unauthorized, VMListing, VMRef,
)
from qvd.l7r.auth.throttle import Throttle, address_key

if TYPE_CHECKING:
    from qvd.l7r.trail import Trail

log = Logger()

CASE_SENSITIVE_KEY = "model.user.login.case-sensitive"
SUPERTENANT = 0
INVALID_TENANTS = (-1, SUPERTENANT)


def usable_tenant(tenant_id: int, blocked: Optional[bool], name: str) -> int:
    """``tenant_id`` if users may log into it (NULL ``blocked`` is not blocked)."""
    if tenant_id in INVALID_TENANTS:
        raise Unauthorized(f"tenant {name!r} cannot have users")
    if blocked:
        raise Unauthorized(f"tenant {name!r} is blocked")
    return tenant_id


class Authenticator:
    """This L7R process's authentication: plugins, throttling and host counters.

    ``plugins`` replaces the ``twisted.plugin`` discovery of factories
    (for embedding and tests); ``clock`` drives token expiry and throttling;
    ``trail`` records each login (``qvd.l7r.trail``; none: metrics only).
    """

    def __init__(
        self,
        config: Config,
        database: Database,
        host_id: int,
        clock: Optional[IReactorTime] = None,
        plugins: Optional[Iterable[IAuthPluginFactory]] = None,
        trail: Optional["Trail"] = None,
    ):
        self.config = config
        self.database = database
        self.host_id = host_id
        self.clock = clock or default_reactor()
        if trail is None:  # embedded or tested alone: metrics only (imported late: the
            from qvd.l7r.trail import Trail  # trail reads this package's types)
            from qvd.metrics.l7r import L7RMetrics
            trail = Trail(L7RMetrics(), None, self.clock)
        self.trail = trail
        self.throttle = Throttle(config, self.clock)
        self.plugins = Plugins(AuthServices(config, database, self.clock), plugins)

    def for_connection(self, peer_address: str) -> ConnectionAuth:
        return ConnectionAuth(self, peer_address)

    def close(self) -> None:
        self.throttle.close()
        self.plugins.close()

    # -- hooks around requests -----------------------------------------------------------
    def before_list_of_vms(self, auth: Auth) -> defer.Deferred[None]:
        return self._each(auth, "before_list_of_vms")

    def before_connect_to_vm(self, auth: Auth) -> defer.Deferred[None]:
        return self._each(auth, "before_connect_to_vm")

    @defer.inlineCallbacks
    def list_of_vm(
        self, auth: Auth, is_application: bool
    ) -> Generator[defer.Deferred[Any], Any, Optional[list[VMListing]]]:
        """The first plugin's list; None when no plugin has one (the L7R queries its own)."""
        rows = yield self.plugins.chain(auth.tenant_id).first("list_of_vm", auth, is_application)
        return None if rows is None else list(rows)

    @defer.inlineCallbacks
    def allow_access_to_vm(self, auth: Auth, vm: VMRef) -> Generator[defer.Deferred[Any], Any, bool]:
        """False for another VM than a token's; else true if one plugin allows it."""
        if auth.vm_id is not None and vm.id != auth.vm_id:
            return False
        return (yield self.plugins.chain(auth.tenant_id).any("allow_access_to_vm", auth, vm))

    def _each(self, auth: Auth, hook: str) -> defer.Deferred[None]:
        return defer.maybeDeferred(lambda: self.plugins.chain(auth.tenant_id).each(hook, auth))

    # -- one attempt ---------------------------------------------------------------------
    def attempt(self, auth: Auth, authorization: str) -> defer.Deferred[None]:
        """Fill ``auth`` from an ``Authorization`` value; fails with Unauthorized or AuthError."""

        def internal(failure: Failure) -> Failure:
            if failure.check(Unauthorized, AuthError):
                return failure
            log.failure("authentication from {peer} failed internally", failure, peer=auth.peer)
            raise AuthError("authentication failed internally") from failure.value

        return defer.maybeDeferred(self._attempt, auth, authorization).addErrback(internal)

    def count(self, ok: bool) -> defer.Deferred[None]:
        """One attempt in ``host_counters``; losing it only loses a statistic."""

        def lost(failure: Failure) -> None:
            log.warn("cannot count an authentication attempt: {error}",
                     error=failure.getErrorMessage())

        return hosts.count(self.database, self.host_id, "auth_attempts",
                             *(("auth_ok",) if ok else ())).addErrback(lost)

    def _attempt(self, auth: Auth, authorization: str) -> defer.Deferred[None]:
        credentials = parse_authorization(authorization)
        if isinstance(credentials, Basic):
            return self._basic(auth, credentials)
        return self._bearer(auth, credentials.token)

    def _fold_case(self, text: str, tenant_id: Optional[int]) -> str:
        text = text.strip()
        return text if self.config.get_bool(CASE_SENSITIVE_KEY, tenant_id) else text.lower()

    @defer.inlineCallbacks
    def _basic(self, auth: Auth, credentials: Basic) -> Generator[defer.Deferred[Any], Any, None]:
        chain = self.plugins.chain(SUPERTENANT)
        found = yield chain.first("find_tenant", auth, credentials.login)
        if found is None:
            raise Unauthorized("no plugin found the login's tenant")
        tenant, login = found
        auth.tenant = yield chain.fold("normalize_tenant", auth, self._fold_case(tenant, None))
        tenant = yield users.tenant_by_name(self.database, auth.tenant)
        if tenant is None:
            raise Unauthorized(f"no tenant {auth.tenant!r}")
        auth.tenant_id = usable_tenant(tenant.id, tenant.blocked, auth.tenant)
        chain = self.plugins.chain(auth.tenant_id)
        auth.login = yield chain.fold(
            "normalize_login", auth, self._fold_case(login, auth.tenant_id))
        if not auth.login:
            raise Unauthorized("empty login")
        address = address_key(auth.peer)
        if self.throttle.refuses_login(address, auth.tenant_id, auth.login):
            raise Throttled("too many recent failures for this login")
        try:
            yield self._check_password(chain, auth, credentials.password)
        except Unauthorized:
            self.throttle.failed(address, auth.tenant_id, auth.login)
            raise
        self.throttle.succeeded(address, auth.tenant_id, auth.login)

    @defer.inlineCallbacks
    def _check_password(
        self, chain: Chain, auth: Auth, password: str
    ) -> Generator[defer.Deferred[Any], Any, None]:
        """Steps 7-9: the first plugin that accepts the password and whose user exists wins."""
        split = yield chain.first("split_second_factor", auth, password)
        password, second = split if split is not None else (password, None)
        for name, plugin in chain:
            accepted = yield chain.call(name, plugin, "authenticate_basic", auth, auth.login,
                                        password)
            self.trail.checked(name, accepted)
            if not accepted:
                continue
            auth.params[USER_NAME_PARAM] = auth.login
            if second is not None and not (
                    yield chain.any("authenticate_second_factor", auth, auth.login, second)):
                raise Unauthorized("wrong second factor")
            yield chain.each("after_authenticate_basic", auth, auth.login)
            user = yield users.user_by_login(self.database, auth.tenant_id, auth.login)
            if user is not None:
                auth.user_id = user.id
                if user.blocked:
                    raise Unauthorized("user is blocked")
                return
            log.info("plugin {plugin} accepted {login} but tenant {tenant} has no such user",
                     plugin=name, login=auth.login, tenant=auth.tenant)
        raise Unauthorized("wrong password or unknown user")

    @defer.inlineCallbacks
    def _bearer(self, auth: Auth, token: str) -> Generator[defer.Deferred[Any], Any, None]:
        accepted = yield self.plugins.chain(SUPERTENANT).any("authenticate_bearer", auth, token)
        self.trail.checked("token", accepted)
        if not accepted:
            raise Unauthorized("unknown or expired token")
        if auth.user_id is None:
            raise PluginError("a plugin accepted a token without saying whose it is")
        user = yield users.user_with_tenant(self.database, auth.user_id)
        if user is None:
            raise Unauthorized("the token's user is gone")
        auth.login, auth.tenant = user.login, user.tenant
        auth.tenant_id = usable_tenant(user.tenant_id, user.tenant_blocked, auth.tenant)
        auth.params.setdefault(USER_NAME_PARAM, auth.login)
        if user.blocked:
            raise Unauthorized("user is blocked")


class ConnectionAuth:
    """Authentication on one client connection, with QVD's per-connection cache.

    The same ``Authorization`` value again on this connection gives the same
    ``Auth`` without plugins, counters or throttling (only a digest of it is kept).
    """

    def __init__(self, authenticator: Authenticator, peer: str):
        self.authenticator = authenticator
        self.peer = peer
        self._address = address_key(peer)
        self._cached: Optional[tuple[bytes, Auth]] = None

    @defer.inlineCallbacks
    def authenticate(self, headers: Headers) -> Generator[defer.Deferred[Any], Any, Auth]:
        authorization = headers.get("Authorization") or ""
        digest = hashlib.sha256(authorization.encode("utf-8")).digest()
        if self._cached is not None and hmac.compare_digest(self._cached[0], digest):
            return self._cached[1]
        authenticator = self.authenticator
        if authenticator.throttle.refuses_address(self._address):
            authenticator.trail.address_throttled(self.peer)
            raise Throttled(f"too many recent failures from {self.peer}")
        auth = Auth(peer=self.peer, headers=extra_headers(headers))
        try:
            yield authenticator.attempt(auth, authorization)
        except Throttled as e:
            log.info("refused {login} in {tenant} from {peer}: throttled",
                     login=auth.login, tenant=auth.tenant, peer=self.peer)
            authenticator.trail.login(auth, authorization, e)
            raise
        except (Unauthorized, AuthError) as e:
            if isinstance(e, Unauthorized):
                if not auth.login or auth.tenant_id is None:  # else counted with its login
                    authenticator.throttle.failed(self._address)
                log.info("authentication of {login} in {tenant} from {peer} failed: {reason}",
                         login=auth.login, tenant=auth.tenant, peer=self.peer, reason=str(e))
            authenticator.trail.login(auth, authorization, e)
            yield authenticator.count(ok=False)
            raise
        authenticator.trail.login(auth, authorization)
        yield authenticator.count(ok=True)
        self._cached = (digest, auth)
        return auth
