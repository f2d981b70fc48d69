"""Credentials as QVD clients send them (reference §2.2).

``Authorization: Basic base64(login:password)`` or ``Bearer base64(token)``,
plus ``Auth-<hex(name)>: base64(value)`` headers for the plugins.  Anything
malformed in ``Authorization`` is a failed login (401), never a crash; a
malformed ``Auth-`` header is only skipped.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Optional, Union

from twisted.logger import Logger

from qvd.http.head import Headers
from qvd.l7r.auth.interface import Unauthorized

log = Logger()

EXTRA_PREFIX = "auth-"
_BLANKS = re.compile(r"\s+")


@dataclass(frozen=True)
class Basic:
    """HTTP Basic credentials; the password stays out of repr, so out of logs and tracebacks."""

    login: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Bearer:
    """A bearer token, likewise kept out of repr."""

    token: str = field(repr=False)


Credentials = Union[Basic, Bearer]


def _decode(encoded: str) -> str:
    """Base64 (blanks ignored, as the original does) of UTF-8 text."""
    try:
        return base64.b64decode(_BLANKS.sub("", encoded), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64 of UTF-8 text") from None


def parse_authorization(value: Optional[str]) -> Credentials:
    """The credentials of an ``Authorization`` header; ``Unauthorized`` if unusable."""
    if not value or not value.strip():
        raise Unauthorized("no Authorization header")
    scheme, _, encoded = value.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        raise Unauthorized("unknown authorization scheme")
    try:
        decoded = _decode(encoded)
        if "\0" in decoded:  # no QVD-DB text can hold it: a failed login, not a DB error
            raise ValueError("text with a NUL")
    except ValueError as e:
        raise Unauthorized(f"{scheme} credentials are {e}") from None
    if scheme == "bearer":
        if not decoded:
            raise Unauthorized("empty bearer token")
        return Bearer(decoded)
    login, colon, password = decoded.partition(":")
    if not colon:
        raise Unauthorized("basic credentials without ':'")
    if not login:
        raise Unauthorized("empty login")
    if not password:
        raise Unauthorized("empty password")
    return Basic(login, password)


def extra_headers(headers: Headers) -> dict[str, str]:
    """The decoded ``Auth-<hex(name)>: base64(value)`` headers (name prefix in any case)."""
    found: dict[str, str] = {}
    # Headers has no public iteration yet; its pairs are the request's header lines.
    for name, value in headers._pairs:
        if name[: len(EXTRA_PREFIX)].lower() != EXTRA_PREFIX:
            continue
        try:
            key = bytes.fromhex(name[len(EXTRA_PREFIX):]).decode("utf-8")
            if not key:
                raise ValueError("empty name")
            found[key] = _decode(value)
        except ValueError:  # also bad hex and bad UTF-8 in the name
            log.debug("ignoring malformed authentication header {name}", name=name)
    return found
