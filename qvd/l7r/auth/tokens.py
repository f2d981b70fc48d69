"""Bearer tokens and stored auth params, as ``create_auth_token`` and friends make them.

A token is 256 random bits written as 43 characters of ``[A-Za-z0-9]``
(like Perl's Session::Token, so tokens look the same in the database); the
client gets it base64-encoded in ``auth_token`` and sends it back as
``Authorization: Bearer <that>``.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
from typing import Any, Generator, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from qvd.db import tokens
from qvd.db.pool import Database
from qvd.reactor import default_reactor
from qvd.l7r.auth.interface import Auth

TOKEN_ALPHABET = string.ascii_letters + string.digits
TOKEN_LENGTH = 43  # 62**43 > 2**256
TOKEN_LIFETIME = 86400  # seconds, as QVD 4


def random_text(length: int, alphabet: str = TOKEN_ALPHABET) -> str:
    """``length`` characters of ``alphabet``, uniformly, from one read of the system's
    CSPRNG (not one read per character): bytes that would bias the choice are skipped."""
    usable = 256 - 256 % len(alphabet)
    chosen: list[str] = []
    while len(chosen) < length:
        chosen += [alphabet[byte % len(alphabet)] for byte in secrets.token_bytes(2 * length)
                   if byte < usable]
    return "".join(chosen[:length])


def new_token() -> str:
    return random_text(TOKEN_LENGTH)


def token_header_value(raw: str) -> str:
    """What a client puts after ``Bearer``: base64 without the newline QVD 4 appended."""
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


@defer.inlineCallbacks
def store_auth_params(database: Database, auth: Auth) -> Generator[defer.Deferred[Any], Any, int]:
    """A ``user_auth_parameters`` row holding ``auth.params``; its id."""
    return (yield tokens.insert_auth_params(database, json.dumps(auth.params)))


@defer.inlineCallbacks
def create_token(
    database: Database,
    auth: Auth,
    vm_id: Optional[int] = None,
    multi_use: bool = True,
    lifetime: int = TOKEN_LIFETIME,
    clock: Optional[IReactorTime] = None,
) -> Generator[defer.Deferred[Any], Any, tuple[int, str]]:
    """(auth_params_id, raw token) of a new token for ``auth``'s user and params.

    A token is never wider than what ``auth`` came with: a login authenticated
    by a token only gets tokens for that token's VM (if it had one), no
    longer-lived than it, and single-use if it was (``protocols/l7r-http.md``).
    Expiry is counted on ``clock`` (the reactor), the clock the Authenticator
    checks it on.
    """
    token = new_token()
    expiration = int((clock or default_reactor()).seconds()) + lifetime
    if auth.token_expiration is not None:
        expiration = min(expiration, auth.token_expiration)
    if auth.vm_id is not None:
        if vm_id is not None and vm_id != auth.vm_id:
            raise ValueError(f"a token for VM {auth.vm_id} cannot give one for VM {vm_id}")
        vm_id = auth.vm_id
    params_id = yield tokens.insert_token(
        database, token, auth.user_id, vm_id, expiration, multi_use and auth.token_multi_use,
        json.dumps(auth.params))
    return params_id, token
