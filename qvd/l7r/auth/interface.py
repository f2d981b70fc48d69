"""What an authentication plugin sees and implements (reference §2.6).

A plugin is an ``IAuthPlugin``; it is installed as a ``twisted.plugin``
provider of ``IAuthPluginFactory`` (a name and a way to build the plugin)
in a module of some ``twisted/plugins/`` directory, and chosen by naming it
in ``l7r.auth.plugins.head``, ``l7r.auth.plugins`` (per tenant) or
``l7r.auth.plugins.tail``.  Hooks may answer with a plain value or a
``Deferred``; raising ``Unauthorized`` rejects the login outright, any other
exception becomes an ``AuthError`` (a 500 that leaks nothing to the client).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

from qvd.config import Config
from qvd.db.pool import Database
from qvd.db.vms import VMListing

# The param the VMA reads the session account from (set on every login).
USER_NAME_PARAM = "qvd.vm.user.name"


class Unauthorized(Exception):
    """The credentials do not let anyone in: the L7R answers 401.

    The reason is for the log only; clients get the canned 401.
    """


class Throttled(Unauthorized):
    """Refused without a check: too many recent failures from this address or for this login."""


class AuthError(Exception):
    """Authentication could not be decided (a plugin failed, the DB is gone): a 500.

    The message is for the log; the client gets a generic body.
    """


class PluginError(AuthError):
    """A plugin is unknown, badly named, or raised an exception."""


@dataclass
class Auth:
    """One authenticated (or authenticating) user: the reference's ``$auth``.

    Plugins read and fill it; the L7R keeps it for the connection.
    """

    peer: str  # the client's address
    headers: dict[str, str] = field(default_factory=dict)  # decoded ``Auth-<hex>`` headers
    tenant_id: Optional[int] = None
    tenant: Optional[str] = None  # normalised tenant name
    login: Optional[str] = None  # normalised login (a plugin may replace it)
    user_id: Optional[int] = None
    params: dict[str, str] = field(default_factory=dict)  # sent to the VMA by connect_to_vm
    vm_id: Optional[int] = None  # a Bearer token's restriction to one VM
    token_expiration: Optional[int] = None  # when the Bearer token used expires
    token_multi_use: bool = True  # False when the Bearer token used was single-use


class VMRef(Protocol):
    """What the chain needs of a VM row (the L7R's ``VMRow`` fits)."""

    id: int
    user_id: int


@dataclass(frozen=True)
class AuthServices:
    """What a plugin may use: live configuration, QVD-DB and the clock."""

    config: Config
    database: Database
    clock: IReactorTime


class IAuthPlugin(Interface):
    """The hooks of the chain, in the order a login meets them."""

    def find_tenant(auth: Auth, login: str) -> Optional[tuple[str, str]]:
        """``(tenant, login)`` split from what the user typed; None to let the next plugin try."""

    def normalize_tenant(auth: Auth, tenant: str) -> Optional[str]:
        """The tenant name, folded through every plugin; None rejects the login."""

    def normalize_login(auth: Auth, login: str) -> Optional[str]:
        """The login, folded through every plugin; None rejects the login."""

    def split_second_factor(auth: Auth, password: str) -> Optional[tuple[str, str]]:
        """``(password, token)`` if this plugin carries a second factor in the password."""

    def authenticate_basic(auth: Auth, login: str, password: str) -> bool:
        """True if the password is right; the first plugin saying so (whose user exists) wins."""

    def authenticate_second_factor(auth: Auth, login: str, token: str) -> bool:
        """True if the second factor is right; one plugin saying so is enough."""

    def after_authenticate_basic(auth: Auth, login: str) -> None:
        """Called on every plugin after one accepted the password (provisioning goes here)."""

    def authenticate_bearer(auth: Auth, token: str) -> bool:
        """True if the raw token is valid; must then set ``auth.user_id``."""

    def before_list_of_vms(auth: Auth) -> None:
        """Called on every plugin before list_of_vm, authenticate_user and create_auth_token."""

    def list_of_vm(auth: Auth, is_application: bool) -> Optional[Sequence[VMListing]]:
        """The user's VMs; None means "not mine to say" (the next plugin, then the L7R, decides)."""

    def allow_access_to_vm(auth: Auth, vm: VMRef) -> bool:
        """True if the user may use ``vm``; one plugin saying so is enough."""

    def before_connect_to_vm(auth: Auth) -> None:
        """Called on every plugin once a VM is assigned, before it is started."""


class IAuthPluginFactory(Interface):
    """A ``twisted.plugin`` provider that names and builds one authentication plugin."""

    name = Attribute("The plugin's name in l7r.auth.plugins* (matched case-insensitively).")

    def make_plugin(services: AuthServices) -> IAuthPlugin:
        """The plugin, built once per L7R process and shared by every login."""


@implementer(IAuthPlugin)
class AuthPlugin:
    """The defaults of every hook (QVD 4's base class); plugins override what they need.

    An override may return the value or a Deferred of it.
    """

    def __init__(self, services: AuthServices):
        self.config = services.config
        self.database = services.database
        self.clock = services.clock

    def find_tenant(self, auth: Auth, login: str) -> Optional[tuple[str, str]]:
        return None

    def normalize_tenant(self, auth: Auth, tenant: str) -> Optional[str]:
        return tenant

    def normalize_login(self, auth: Auth, login: str) -> Optional[str]:
        return login

    def split_second_factor(self, auth: Auth, password: str) -> Optional[tuple[str, str]]:
        return None

    def authenticate_basic(self, auth: Auth, login: str, password: str) -> bool:
        return False

    def authenticate_second_factor(self, auth: Auth, login: str, token: str) -> bool:
        return False

    def after_authenticate_basic(self, auth: Auth, login: str) -> None:
        return None

    def authenticate_bearer(self, auth: Auth, token: str) -> bool:
        return False

    def before_list_of_vms(self, auth: Auth) -> None:
        return None

    def list_of_vm(self, auth: Auth, is_application: bool) -> Optional[Sequence[VMListing]]:
        return None

    def allow_access_to_vm(self, auth: Auth, vm: VMRef) -> bool:
        return vm.user_id == auth.user_id

    def before_connect_to_vm(self, auth: Auth) -> None:
        return None


@implementer(IPlugin, IAuthPluginFactory)
@dataclass(frozen=True)
class AuthPluginFactory:
    """The usual factory: ``name = AuthPluginFactory("name", PluginClass)`` in a plugin module."""

    name: str
    plugin: Callable[[AuthServices], IAuthPlugin]

    def make_plugin(self, services: AuthServices) -> IAuthPlugin:
        return self.plugin(services)
