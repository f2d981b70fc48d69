"""The reactor and the wall clock, as every daemon and tool reaches them."""

from __future__ import annotations

import time
from typing import Any


def default_reactor() -> Any:
    """The global reactor, imported late so callers can install another first."""
    from twisted.internet import reactor

    return reactor


def epoch() -> int:
    """Whole seconds of the wall clock: QVD-DB's ``*_ts`` and expiry columns count these."""
    return int(time.time())
