"""The ``user_tokens`` and ``user_auth_parameters`` tables: Bearer tokens and the auth
params a token (or the User Portal's ``store_auth``) carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer
from txpostgres.txpostgres import Cursor

from qvd.db.pool import Database


@dataclass(frozen=True)
class TokenGrant:
    """What a valid ``user_tokens`` row grants: whose it is, for which VM, until when."""

    user_id: int
    vm_id: Optional[int]
    expiration: int
    multi_use: bool
    parameters: Any  # the stored ``user_auth_parameters`` JSON, if any


def use_token(db: Database, token: str, now: int) -> defer.Deferred[Optional[TokenGrant]]:
    """The grant of a valid token; None if unknown or expired.

    Expired tokens are deleted, and so are single-use ones as they are used
    (QVD 4 set their expiration to 0, which comes to the same), each with its
    stored auth params.
    """
    return db.run_interaction(_use_token, token, now)


# A token and the auth params it carries, gone together (the params row has no other
# user): the two CTEs of a statement, for a ``{where}`` on ``user_tokens``.
TOKENS_GONE = (
    "gone_tokens AS (DELETE FROM user_tokens WHERE {where} RETURNING auth_params_id),"
    " gone_params AS (DELETE FROM user_auth_parameters"
    " WHERE id IN (SELECT auth_params_id FROM gone_tokens))"
)
DELETE_TOKENS = "WITH " + TOKENS_GONE + " SELECT 1"


@defer.inlineCallbacks
def _use_token(
    cursor: Cursor, token: str, now: int
) -> Generator[defer.Deferred[Any], Any, Optional[TokenGrant]]:
    yield cursor.execute(
        "SELECT t.user_id, t.vm_id, t.expiration, t.multi_use, p.parameters FROM user_tokens t"
        " LEFT JOIN user_auth_parameters p ON p.id = t.auth_params_id"
        " WHERE t.token = %s FOR UPDATE OF t", (token,))
    row = cursor.fetchone()
    if row is None:
        return None
    grant = TokenGrant(*row)
    if now > grant.expiration or not grant.multi_use:
        yield cursor.execute(DELETE_TOKENS.format(where="token = %s"), (token,))
    if now > grant.expiration:
        return None
    return grant


def delete_expired_tokens(db: Database, now: int) -> defer.Deferred[None]:
    return db.run_operation(DELETE_TOKENS.format(where="expiration < %s"), (now,))


INSERT_AUTH_PARAMS = "INSERT INTO user_auth_parameters (parameters) VALUES (%s) RETURNING id"


def insert_auth_params(db: Database, parameters: str) -> defer.Deferred[int]:
    """A ``user_auth_parameters`` row from JSON text; its id."""
    return db.run_query(INSERT_AUTH_PARAMS, (parameters,)).addCallback(lambda rows: rows[0][0])


def insert_token(
    db: Database, token: str, user_id: int, vm_id: Optional[int], expiration: int,
    multi_use: bool, parameters: str,
) -> defer.Deferred[int]:
    """A token and the auth params it carries, in one statement; the params' id."""
    return db.run_query(
        f"WITH params AS ({INSERT_AUTH_PARAMS})"
        " INSERT INTO user_tokens (token, user_id, vm_id, expiration, auth_params_id, multi_use)"
        " SELECT %s, %s, %s, %s, id, %s FROM params RETURNING auth_params_id",
        (parameters, token, user_id, vm_id, expiration, multi_use)).addCallback(
            lambda rows: rows[0][0])
