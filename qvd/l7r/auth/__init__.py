"""L7R authentication: the plugin chain of QVD 4, with its known bugs fixed.

The L7R builds one ``Authenticator`` per process and one ``ConnectionAuth``
per client connection (``for_connection``); ``ConnectionAuth.authenticate``
turns a request's headers into an ``Auth`` or fails with ``Unauthorized``
(answer 401 with ``WWW-Authenticate: Basic realm="QVD"``) or ``AuthError``
(answer 500 with a generic body).  The request hooks (``before_list_of_vms``,
``list_of_vm``, ``allow_access_to_vm``, ``before_connect_to_vm``) are
``Authenticator`` methods; tokens and stored params come from ``tokens``.
Plugins: see ``interface``; throttling and its keys: see ``throttle``.
"""

from qvd.l7r.auth.authenticator import Authenticator, ConnectionAuth
from qvd.l7r.auth.interface import (
    Auth, AuthError, AuthPlugin, AuthPluginFactory, AuthServices, IAuthPlugin,
    IAuthPluginFactory, PluginError, Throttled, Unauthorized, VMListing, VMRef,
)
from qvd.l7r.auth.tokens import create_token, store_auth_params, token_header_value

__all__ = [
    "Auth", "AuthError", "AuthPlugin", "AuthPluginFactory", "AuthServices", "Authenticator",
    "ConnectionAuth", "IAuthPlugin", "IAuthPluginFactory", "PluginError", "Throttled",
    "Unauthorized", "VMListing", "VMRef", "create_token", "store_auth_params",
    "token_header_value",
]
