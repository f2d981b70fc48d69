"""The QVD 4 password hash, kept bit-for-bit so existing databases keep working.

QVD stores ``base64(sha256(salt || password))`` without ``=`` padding, with
one global salt (``l7r.auth.plugin.default.salt``).  It is weak (no per-user
salt, no iterations) but it is what every QVD 4 database holds; the L7R
compares in constant time and never accepts an empty password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SALT_KEY = "l7r.auth.plugin.default.salt"


def qvd_hash(password: str, salt: str) -> str:
    digest = hashlib.sha256((salt + password).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def check_password(password: str, stored: str | None, salt: str) -> bool:
    """True when ``password`` matches the stored hash; empty passwords never match."""
    if not password or not stored:
        return False
    return hmac.compare_digest(qvd_hash(password, salt), stored)
