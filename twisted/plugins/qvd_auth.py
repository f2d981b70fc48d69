"""The built-in L7R authentication plugins, found by name by ``qvd.l7r.auth``."""

from qvd.l7r.auth.auto import auto
from qvd.l7r.auth.default import default
from qvd.l7r.auth.ldap import ldap
from qvd.l7r.auth.totp import totp

__all__ = ["auto", "default", "ldap", "totp"]
