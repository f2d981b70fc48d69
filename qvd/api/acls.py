"""Effective ACLs: what an administrator may do, from its roles and the overrides.

An administrator's ACLs are those its roles reach (``all_acl_role_relations``:
inheritance, with denials), then QVD 4's overrides (``AclsOverwriteList``):
the recovery administrator (id 0) always holds the administrator, config,
tenant and role ACLs; tenant ACLs are hidden from everyone but superadmins,
and from everyone in monotenant mode.  QVD 4 also closed every log ACL for
everybody (so ``log_get_list`` answered 4210 to all); we do not: log ACLs
work like any other (protocols/api.md, "Fixes on purpose").

A check passes when any ACL name matches any of the action's (or field's)
patterns (``re.search``, as Perl's ``=~``); an empty list passes.  Each
administrator's set is cached until a change to roles, ACLs or role
assignments is announced on ``CHANNEL`` (by any API process).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

from twisted.internet import defer

from qvd.db import administrators
from qvd.db.administrators import Administrator
from qvd.db.pool import Database

CHANNEL = "qvd_api_acls_changed"
NOTHING = "^$"
CLOSED = NOTHING
OPENED_FOR_RECOVERY = r"^(administrator|config|tenant|role)\."
HIDDEN_FROM_TENANT_ADMINS = r"^tenant\..+"


def overrides(admin: Administrator, multitenant: bool) -> tuple[str, str, str]:
    """(closed, opened, hidden) patterns for ``admin``, as SQL regular expressions."""
    opened = OPENED_FOR_RECOVERY if admin.recovery else NOTHING
    hidden = NOTHING if admin.superadmin and multitenant else HIDDEN_FROM_TENANT_ADMINS
    return CLOSED, opened, hidden


class Permissions:
    """The ACL names one administrator holds, with pattern checks memoised."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(names)
        self._answers: dict[str, bool] = {}

    def matches(self, pattern: str) -> bool:
        answer = self._answers.get(pattern)
        if answer is None:
            compiled = re.compile(pattern)
            answer = self._answers[pattern] = any(compiled.search(n) for n in self.names)
        return answer

    def allows(self, patterns: Optional[Sequence[str]]) -> bool:
        return not patterns or any(self.matches(p) for p in patterns)


class AclCache:
    """Permissions by administrator id, dropped whole on any ACL-relevant change."""

    def __init__(self, database: Database):
        self.database = database
        self._cache: dict[tuple[int, bool], Permissions] = {}

    def clear(self, *_: object) -> None:
        self._cache.clear()

    def permissions(self, admin: Administrator, multitenant: bool) -> defer.Deferred[Permissions]:
        key = (admin.id, multitenant)
        cached = self._cache.get(key)
        if cached is not None:
            return defer.succeed(cached)
        d = administrators.operative_acl_names(self.database, admin.id,
                                               *overrides(admin, multitenant))

        def store(names: frozenset[str]) -> Permissions:
            permissions = self._cache[key] = Permissions(names)
            return permissions

        return d.addCallback(store)
