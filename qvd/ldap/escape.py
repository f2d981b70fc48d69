"""Putting a login into LDAP filters and DNs safely.

QVD 4 escaped the login as a DN value even inside search filters, so
``*`` and parentheses went through (filter injection).  Here a filter gets
RFC 4515 escaping and a DN RFC 4514 escaping, each in its own place.
"""

from __future__ import annotations

import re
from typing import Mapping

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn

_FILTER_SPECIALS = frozenset("*()\\\x00")
_DN_SPECIALS = frozenset('"+,;<>\\=')
_PLACEHOLDER = re.compile(r"%([un])")


def escape_filter_value(text: str) -> str:
    """``text`` as an assertion value of an RFC 4515 filter: ``* ( ) \\ NUL`` as ``\\XX``."""
    return "".join(f"\\{ord(ch):02x}" if ch in _FILTER_SPECIALS else ch for ch in text)


def escape_dn_value(text: str) -> str:
    """``text`` as an attribute value of an RFC 4514 DN.

    Specials are backslash-escaped, control characters hex-escaped, and a
    leading blank or ``#`` and a trailing blank escaped.
    """
    out = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch in _DN_SPECIALS or (i == 0 and ch in " #"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f" or (i == last and ch == " "):
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def account_name(login: str) -> str:
    """The account part of ``DOMAIN\\user`` or ``user@domain`` (else the login itself)."""
    return login.rpartition("\\")[2].partition("@")[0]


def render(template: str, login: str, escape) -> str:
    """``template`` with ``%u`` (the login) and ``%n`` (its account name) put in by ``escape``.

    One pass: text put in is never expanded again.
    """
    values: Mapping[str, str] = {"u": login, "n": account_name(login)}
    return _PLACEHOLDER.sub(lambda m: escape(values[m.group(1)]), template)


def normal_dn(dn: str) -> str:
    """A DN in a form to compare with another: attribute names and values folded, blanks
    around them dropped (good enough for the case-insensitive names directories use)."""
    try:
        return ",".join(f"{name.strip().lower()}={value.strip().lower()}"
                        for name, value, _ in parse_dn(dn, escape=False, strip=True))
    except LDAPInvalidDnError:
        return dn.strip().lower()
