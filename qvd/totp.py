"""Time-based one-time passwords (RFC 6238 over RFC 4226), as QVD 4's TOTP plugin computes them.

A code is the last ``digits`` decimal digits of the dynamically truncated
HMAC-SHA1 of the time step ``floor((now - t0) / interval)`` under the secret
(stored base32 in the user property ``l7r.auth.plugin.totp.secret32``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from qvd.config import Config, ConfigError

SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation


@dataclass(frozen=True)
class Window:
    """Which time steps a code may come from (the plugin's keys)."""

    digits: int = 6
    interval: float = 30.0
    t0: float = 0.0
    leeway: int = 1  # steps back
    leeway_before: int = 0  # steps ahead (a client clock running fast)

    def step(self, now: float) -> int:
        return math.floor((now - self.t0) / self.interval)


def new_secret() -> str:
    """A fresh random secret, base32 without padding (what authenticator apps take)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def decode_secret(text: str) -> bytes:
    """The key of a base32 secret (case, blanks and padding forgiven); ValueError if bad."""
    cleaned = "".join(text.split()).upper().rstrip("=")
    try:
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise ValueError("not a base32 secret") from None
    if not key:
        raise ValueError("an empty secret")
    return key


def code(key: bytes, step: int, digits: int = 6) -> str:
    """The RFC 4226 code of ``step`` under ``key``."""
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10 ** digits).zfill(digits)


def matching_step(key: bytes, token: str, now: float, window: Window) -> Optional[int]:
    """The time step whose code ``token`` is, within the window around ``now``; else None."""
    if len(token) != window.digits or not token.isdigit():
        return None
    current = window.step(now)
    for step in range(current - window.leeway, current + window.leeway_before + 1):
        if step >= 0 and hmac.compare_digest(code(key, step, window.digits), token):
            return step
    return None


def otpauth_uri(secret: str, account: str, issuer: str, window: Window) -> str:
    """The ``otpauth://totp/...`` URI authenticator apps read from a QR code."""
    label = urllib.parse.quote(f"{issuer}:{account}", safe="@:")
    query = urllib.parse.urlencode({"secret": secret, "issuer": issuer, "algorithm": "SHA1",
                                    "digits": window.digits, "period": f"{window.interval:g}"})
    return f"otpauth://totp/{label}?{query}"


PREFIX = "l7r.auth.plugin.totp."


def read_window(config: Config, tenant_id: Optional[int]) -> Window:
    """The tenant's code size, interval, t0 and leeways."""
    window = Window(
        digits=config.get_int(PREFIX + "token_size", tenant_id),
        interval=config.get_float(PREFIX + "interval", tenant_id),
        t0=config.get_float(PREFIX + "t0", tenant_id),
        leeway=config.get_int(PREFIX + "leeway", tenant_id),
        leeway_before=config.get_int(PREFIX + "leeway_before", tenant_id))
    if not 1 <= window.digits <= 10 or window.interval <= 0:
        raise ConfigError(f"{PREFIX}token_size must be 1 to 10 and {PREFIX}interval positive")
    return window
