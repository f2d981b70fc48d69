"""The TOTP plugin's rows: a user's secret and the last time step accepted from them.

Both are QVD 4 user properties (``properties_list`` / ``qvd_object_properties_list`` /
``user_properties``), so a database deployed by QVD 4 needs no new table or
column: the secret is where QVD 4's ``qvd-make-totp-secret`` puts it, and the
last accepted step is one more property, ``l7r.auth.plugin.totp.last_step``.
``claim_step`` moves it forward with one conditional upsert, so of the L7R
processes and nodes sharing QVD-DB exactly one accepts a given code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generator, Optional

from twisted.internet import defer

from qvd.db.pool import Database

SECRET_KEY = "l7r.auth.plugin.totp.secret32"
LAST_STEP_KEY = "l7r.auth.plugin.totp.last_step"


@dataclass(frozen=True)
class Enrolment:
    """A user with a TOTP secret."""

    user_id: int
    secret32: str


_PROPERTY_VALUE = (
    "SELECT u.id, up.value FROM users u"
    " JOIN user_properties up ON up.user_id = u.id"
    " JOIN qvd_object_properties_list q ON q.id = up.property_id AND q.qvd_object = 'user'"
    " JOIN properties_list pl ON pl.id = q.property_id"
    " WHERE u.login = %s AND u.tenant_id = %s AND pl.key = %s")


@defer.inlineCallbacks
def enrolment(db: Database, tenant_id: int,
              login: str) -> Generator[defer.Deferred[Any], Any, Optional[Enrolment]]:
    """The user's secret, None when the user or the property is missing."""
    rows = yield db.run_read(_PROPERTY_VALUE, (login, tenant_id, SECRET_KEY))
    return Enrolment(*rows[0]) if rows else None


def claim_step(db: Database, user_id: int, tenant_id: int, step: int) -> defer.Deferred[bool]:
    """True if ``step`` is later than any step accepted from the user before (and is now
    the last one); False for a replay."""
    return db.run_interaction(_claim_step, user_id, tenant_id, step)


@defer.inlineCallbacks
def _claim_step(cursor: Any, user_id: int, tenant_id: int,
                step: int) -> Generator[defer.Deferred[Any], Any, bool]:
    property_id = yield _user_property_id(cursor, tenant_id, LAST_STEP_KEY)
    yield cursor.execute(
        "INSERT INTO user_properties (user_id, property_id, value) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id, property_id) DO UPDATE SET value = EXCLUDED.value"
        " WHERE CASE WHEN user_properties.value ~ '^[0-9]{1,18}$'"
        " THEN user_properties.value::bigint < EXCLUDED.value::bigint ELSE TRUE END"
        " RETURNING 1", (user_id, property_id, str(step)))
    return cursor.fetchone() is not None


@defer.inlineCallbacks
def _user_property_id(cursor: Any, tenant_id: int,
                      key: str) -> Generator[defer.Deferred[Any], Any, int]:
    """The ``qvd_object_properties_list`` id of user property ``key`` in the tenant,
    declared on first use."""
    select = ("SELECT q.id FROM qvd_object_properties_list q"
              " JOIN properties_list pl ON pl.id = q.property_id"
              " WHERE pl.key = %s AND pl.tenant_id = %s AND q.qvd_object = 'user'")
    yield cursor.execute(select, (key, tenant_id))
    row = cursor.fetchone()
    if row is None:
        yield cursor.execute("INSERT INTO properties_list (key, tenant_id) VALUES (%s, %s)"
                             " ON CONFLICT (key, tenant_id) DO NOTHING", (key, tenant_id))
        yield cursor.execute(
            "INSERT INTO qvd_object_properties_list (property_id, qvd_object)"
            " SELECT id, 'user' FROM properties_list WHERE key = %s AND tenant_id = %s"
            " ON CONFLICT (property_id, qvd_object) DO NOTHING", (key, tenant_id))
        yield cursor.execute(select, (key, tenant_id))
        row = cursor.fetchone()
    return row[0]
