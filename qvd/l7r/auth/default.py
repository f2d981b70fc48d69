"""The ``default`` plugin: tenants from ``user@tenant``, QVD-DB passwords and tokens.

Registered for ``twisted.plugin`` in ``twisted/plugins/qvd_auth.py``; it is
the default ``l7r.auth.plugins.tail``.
"""

from __future__ import annotations

from typing import Any, Generator, Optional

from twisted.internet import defer, threads
from twisted.logger import Logger

from qvd.db import tokens, users
from qvd.l7r.auth.interface import Auth, AuthPlugin, AuthPluginFactory
from qvd.passwords import SALT_KEY, check_password

log = Logger()

SEPARATORS_KEY = "l7r.auth.plugin.default.separators"
DEFAULT_TENANT_KEY = "l7r.auth.plugin.default.tenant"
SUPERTENANT = 0


def stored_params(stored: Any) -> dict[str, str]:
    """The string-like values of a stored ``user_auth_parameters`` JSON object."""
    if not isinstance(stored, dict):
        return {}
    return {str(key): str(value) for key, value in stored.items()
            if isinstance(value, (str, int, float)) and not isinstance(value, bool)}


class DefaultPlugin(AuthPlugin):
    """QVD 4's ``Default`` plugin, with constant-time checks and honoured token flags."""

    def find_tenant(self, auth: Auth, login: str) -> Optional[tuple[str, str]]:
        """Split at the first separator character (``a@b@c`` is ``a`` in tenant ``b@c``)."""
        separators = self.config.get(SEPARATORS_KEY)
        cut = next((i for i, char in enumerate(login) if char in separators), None)
        if cut is None:
            return self.config.get(DEFAULT_TENANT_KEY, SUPERTENANT), login
        return login[cut + 1:], login[:cut]

    @defer.inlineCallbacks
    def authenticate_basic(
        self, auth: Auth, login: str, password: str
    ) -> Generator[defer.Deferred[Any], Any, bool]:
        user = yield users.user_by_login(self.database, auth.tenant_id, login)
        stored = user.password if user is not None else None
        salt = self.config.get(SALT_KEY)
        return (yield threads.deferToThread(check_password, password, stored, salt))

    @defer.inlineCallbacks
    def authenticate_bearer(self, auth: Auth, token: str) -> Generator[defer.Deferred[Any], Any, bool]:
        """A valid ``user_tokens`` row: single-use ones are spent, expired ones deleted."""
        grant = yield tokens.use_token(self.database, token, int(self.clock.seconds()))
        if grant is None:
            return False
        auth.user_id, auth.vm_id = grant.user_id, grant.vm_id
        auth.token_expiration, auth.token_multi_use = grant.expiration, grant.multi_use
        auth.params.update(stored_params(grant.parameters))
        return True


default = AuthPluginFactory("default", DefaultPlugin)
