"""``qa user <filter> totp new|del``: enrolling users for the ``TOTP`` plugin.

``new`` stores a fresh secret in the user property the plugin reads (QVD 4's
``l7r.auth.plugin.totp.secret32``) and shows the ``otpauth://`` URI and its QR
code, drawn with Unicode half blocks for a terminal with a dark background
(light modules drawn, as ``qrencode -t UTF8`` does), for the user to scan
with an authenticator app.  ``del`` removes the secret (the user can no longer
log in through a chain with ``TOTP``).
"""

from __future__ import annotations

import segno

from qvd.admin.base import AdminBase, AdminError, Result
from qvd.admin.command import Command
from qvd.admin.objects import USER, ObjectKind
from qvd.config import ConfigError
from qvd.db.totp import LAST_STEP_KEY, SECRET_KEY
from qvd.totp import new_secret, otpauth_uri, read_window

QUIET_ZONE = 4  # modules of light border a QR code needs around it
# (upper module light, lower module light) -> character
HALF_BLOCKS = {(True, True): "\u2588", (True, False): "\u2580", (False, True): "\u2584",
               (False, False): " "}


def qr_text(data: str) -> str:
    """``data`` as a QR code in Unicode half blocks, two module rows per line."""
    rows = [[not dark for dark in row]
            for row in segno.make(data, error="m").matrix_iter(scale=1, border=QUIET_ZONE)]
    if len(rows) % 2:
        rows.append([True] * len(rows[0]))
    return "".join("".join(HALF_BLOCKS[pair] for pair in zip(upper, lower)) + "\n"
                   for upper, lower in zip(rows[::2], rows[1::2]))


class TOTPEnrolmentMixin(AdminBase):
    """``totp new`` and ``totp del`` on users."""

    def _totp(self, cur, kind: ObjectKind, command: Command) -> Result:
        words = [a.value for a in command.arguments]
        if words not in (["new"], ["del"]) or any(a.key for a in command.arguments):
            raise AdminError("usage: qa user <filter> totp new|del")
        ids = self._ids(cur, kind, command.filter_text)
        if words == ["del"]:
            cur.execute(
                "DELETE FROM user_properties up USING qvd_object_properties_list q,"
                " properties_list pl WHERE q.id = up.property_id AND pl.id = q.property_id"
                " AND up.user_id = ANY(%s) AND pl.key IN (%s, %s)",
                (ids, SECRET_KEY, LAST_STEP_KEY))
            return Result(len(ids))
        if len(ids) != 1:
            raise AdminError(f"'totp new' enrols one user at a time; the filter matches {len(ids)}")
        cur.execute("SELECT u.login, u.tenant_id, t.name FROM users u"
                    " JOIN tenants t ON t.id = u.tenant_id WHERE u.id = %s", ids)
        login, tenant_id, tenant = cur.fetchone()
        try:
            window = read_window(self.config, tenant_id)
        except ConfigError as e:
            raise AdminError(str(e)) from None
        secret = new_secret()
        issuer = self.config.get("l7r.auth.plugin.totp.issuer", tenant_id)
        uri = otpauth_uri(secret, f"{login}@{tenant}", issuer, window)
        property_id = self._declare_property(cur, USER, SECRET_KEY, tenant_id)
        cur.execute("INSERT INTO user_properties (user_id, property_id, value) VALUES (%s, %s, %s)"
                    " ON CONFLICT (user_id, property_id) DO UPDATE SET value = EXCLUDED.value",
                    (ids[0], property_id, secret))
        text = (f"Scan this with an authenticator app (or type the secret {secret}):\n\n"
                f"{qr_text(uri)}\n{uri}\n")
        return Result(1, ["id", "login", "tenant", "secret", "uri"],
                      [[ids[0], login, tenant, secret, uri]], text=text)
