"""The ``TOTP`` plugin: a one-time code after the password (reference §2.7).

``split_second_factor`` takes the last ``l7r.auth.plugin.totp.token_size``
characters of every password of the tenant as the code (so with this plugin
in the chain no login gets in on a password alone); ``authenticate_second_factor``
checks the code against the user's secret at the reactor's time, within the
leeway.  Beyond QVD 4: a code once accepted is refused for the rest of its
window, by every L7R of the farm (the last accepted step lives in QVD-DB,
``qvd.db.totp``).
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer
from twisted.logger import Logger

from qvd.config import ConfigError
from qvd.db import totp as rows
from qvd.l7r.auth.interface import Auth, AuthError, AuthPlugin, AuthPluginFactory
from qvd.totp import Window, decode_secret, matching_step, read_window

log = Logger()


class TOTPPlugin(AuthPlugin):
    """The second factor of every login of the tenants that list it."""

    def _window(self, auth: Auth) -> Window:
        try:
            return read_window(self.config, auth.tenant_id)
        except ConfigError as e:  # a 500, logged without a traceback
            raise AuthError(f"TOTP: tenant {auth.tenant}: {e}") from None

    def split_second_factor(self, auth: Auth, password: str) -> Optional[tuple[str, str]]:
        size = self._window(auth).digits
        if len(password) <= size:
            return "", password  # no password left: the password plugins refuse it
        return password[:-size], password[-size:]

    @defer.inlineCallbacks
    def authenticate_second_factor(
        self, auth: Auth, login: str, token: str
    ) -> Generator[defer.Deferred[Any], Any, bool]:
        window = self._window(auth)
        assert auth.tenant_id is not None
        enrolled = yield rows.enrolment(self.database, auth.tenant_id, login)
        if enrolled is None:
            log.info("TOTP: refused {login} in tenant {tenant}: no secret enrolled",
                     login=login, tenant=auth.tenant)
            return False
        try:
            key = decode_secret(enrolled.secret32)
        except ValueError as e:
            log.warn("TOTP: refused {login} in tenant {tenant}: property {key}: {error}",
                     login=login, tenant=auth.tenant, key=rows.SECRET_KEY, error=str(e))
            return False
        step = matching_step(key, token, self.clock.seconds(), window)
        if step is None:
            log.info("TOTP: refused {login} in tenant {tenant}: wrong or expired code",
                     login=login, tenant=auth.tenant)
            return False
        if not (yield rows.claim_step(self.database, enrolled.user_id, auth.tenant_id, step)):
            log.warn("TOTP: refused {login} in tenant {tenant} from {peer}: a code already used",
                     login=login, tenant=auth.tenant, peer=auth.peer)
            return False
        return True


totp = AuthPluginFactory("TOTP", TOTPPlugin)
