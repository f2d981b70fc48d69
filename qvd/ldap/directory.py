"""A directory the L7R checks passwords against: blocking ldap3 code, run in threads.

``Directory`` holds the connections to one set of servers (``Servers``) and
reuses them: every worker thread takes a ``Link`` (a *searcher* connection,
bound once as the service account or anonymously, and a *checker* connection
rebound as each user), uses it for one login and gives it back.  A server
that fails (refused, timed out, TLS refused) is skipped for ``DOWN_FOR``
seconds and the login is retried on the next one, so a dead first server
costs one connect timeout, not one per login.

``Directory.authenticate`` is QVD 4's LDAP algorithm (reference §3), with the
fixes of DESIGN.md: RFC 4515/4514 escaping, empty passwords refused before
any bind, group membership, and a verdict that says why a login failed.
"""

from __future__ import annotations

import math
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import ldap3
from ldap3.core.exceptions import (
    LDAPCommunicationError, LDAPExceptionError, LDAPInvalidFilterError, LDAPResponseTimeoutError,
    LDAPStartTLSError,
)

from qvd.ldap.escape import escape_dn_value, escape_filter_value, normal_dn, render

DOWN_FOR = 30.0  # seconds a failed server is skipped while another one answers
INVALID_CREDENTIALS = 49
SIZE_LIMIT_EXCEEDED = 4
SCOPES = {"base": ldap3.BASE, "one": ldap3.LEVEL, "sub": ldap3.SUBTREE}
DEREFS = {"never": ldap3.DEREF_NEVER, "search": ldap3.DEREF_SEARCH,
          "find": ldap3.DEREF_BASE, "always": ldap3.DEREF_ALWAYS}
# entry attribute -> param for the VMA (reference §3 step 7)
EXPORTED = (("uidNumber", "qvd.vm.user.uid"), ("gidNumber", "qvd.vm.user.gid"),
            ("uid", "qvd.vm.user.ldap.name"), ("homeDirectory", "qvd.vm.user.ldap.home"))
HOME_PARAM = "qvd.vm.user.home"
RACF_PARAM = "qvd.auth.ldap.racf_detailed_error"
# a server gone, hung or refusing TLS: try the next one
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
UNREACHABLE = (LDAPCommunicationError, LDAPResponseTimeoutError, LDAPStartTLSError, OSError)


class DirectoryConfigError(ValueError):
    """Settings no directory could work with (bad filter, scope, regex, ...)."""


@dataclass(frozen=True)
class Servers:
    """Where the directory is and how to talk to it: the key of a ``Directory``."""

    hosts: tuple[str, ...]  # host, host:port or ldap://, ldaps://, ldapi:// URIs
    starttls: bool = False
    ca_file: Optional[str] = None  # None: the system's CAs
    verify: bool = True
    connect_timeout: float = 5.0
    timeout: float = 10.0  # each operation (bind, search); whole seconds (ldap3 needs them)
    binddn: Optional[str] = None  # service account; may hold %u / %n
    bindpass: Optional[str] = None  # None with a binddn: the user's own password

    @property
    def service_per_login(self) -> bool:
        """True when the service bind depends on the login (it cannot be kept bound)."""
        return self.binddn is not None and (
            self.bindpass is None or bool(re.search(r"%[un]", self.binddn)))


@dataclass(frozen=True)
class Lookup:
    """How to find and check one user (reference §3; group keys are ours)."""

    base: str
    filter: str = "(uid=%u)"
    scope: str = "sub"
    deref: str = "never"
    userbindpattern: Optional[str] = None
    racf_allowregex: Optional[str] = None
    name_attribute: Optional[str] = None  # set: the login becomes this attribute's value
    home_set: bool = False
    group: Optional[str] = None
    group_nested: bool = False
    group_base: Optional[str] = None  # None: the group's parent entry
    group_depth: int = 5

    def check(self) -> None:
        if self.scope not in SCOPES:
            raise DirectoryConfigError(f"auth.ldap.scope must be one of {', '.join(SCOPES)},"
                                       f" not {self.scope!r}")
        if self.deref not in DEREFS:
            raise DirectoryConfigError(f"auth.ldap.deref must be one of {', '.join(DEREFS)},"
                                       f" not {self.deref!r}")
        if self.racf_allowregex is not None:
            try:
                re.compile(self.racf_allowregex)
            except re.error as e:
                raise DirectoryConfigError(f"auth.ldap.racf_allowregex: {e}") from None


@dataclass
class Verdict:
    """What the directory said about one login; ``reason`` is for the log."""

    ok: bool
    reason: str
    dn: Optional[str] = None
    name: Optional[str] = None  # the normalised login, when asked for
    params: dict[str, str] = field(default_factory=dict)
    unavailable: bool = False  # no server could be asked


def _first(attributes: dict[str, Any], name: str) -> Optional[str]:
    for key, values in attributes.items():
        if key.lower() == name.lower():
            if isinstance(values, (list, tuple)):
                return str(values[0]) if values else None
            return str(values)
    return None


class Link:
    """One worker's two connections to the server it was opened on."""

    def __init__(self, server_index: int, searcher: ldap3.Connection, checker: ldap3.Connection):
        self.server_index = server_index
        self.searcher = searcher
        self.checker = checker
        self.searcher_identity: Optional[tuple[Optional[str], Optional[str]]] = None

    def close(self) -> None:
        for connection in (self.searcher, self.checker):
            try:
                connection.unbind()
            except (LDAPExceptionError, OSError):
                pass


class Directory:
    """The connections to one ``Servers`` and the login check; thread-safe."""

    def __init__(self, servers: Servers):
        if not servers.hosts:
            raise DirectoryConfigError("auth.ldap.host names no server")
        self.settings = servers
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED if servers.verify else ssl.CERT_NONE,
            ca_certs_file=servers.ca_file)
        try:
            self.servers = [ldap3.Server(host, get_info=ldap3.NONE, tls=tls,
                                         connect_timeout=servers.connect_timeout)
                            for host in servers.hosts]
        except LDAPExceptionError as e:
            raise DirectoryConfigError(f"auth.ldap.host: {e}") from None
        self._lock = threading.Lock()
        self._idle: list[Link] = []
        self._down_until: dict[int, float] = {}
        self._closed = False

    # -- connections -------------------------------------------------------------------
    def _connection(self, server: ldap3.Server) -> ldap3.Connection:
        connection = ldap3.Connection(
            server, receive_timeout=max(1, math.ceil(self.settings.timeout)), auto_referrals=False,
            read_only=True, raise_exceptions=False, return_empty_attributes=False)
        connection.open()
        if self.settings.starttls and not server.ssl and not server.ipc:
            if not connection.start_tls():
                raise LDAPStartTLSError(f"StartTLS refused: {connection.result}")
        return connection

    def _order(self) -> list[int]:
        """Servers to try: those not recently failed first, in the configured order."""
        now = time.monotonic()
        indexes = range(len(self.servers))
        with self._lock:
            up = [i for i in indexes if self._down_until.get(i, 0) <= now]
        return up + [i for i in indexes if i not in up]

    def _open(self, index: int) -> Link:
        server = self.servers[index]
        searcher = self._connection(server)
        try:
            return Link(index, searcher, self._connection(server))
        except BaseException:
            searcher.unbind()
            raise

    def _take(self, avoid: set[int]) -> Link:
        with self._lock:
            for i, link in enumerate(self._idle):
                if link.server_index not in avoid:
                    return self._idle.pop(i)
        last: Optional[BaseException] = None
        for index in self._order():
            if index in avoid:
                continue
            try:
                return self._open(index)
            except UNREACHABLE as e:
                self._failed(index)
                avoid.add(index)
                last = e
        raise LDAPCommunicationError(f"no server answered: {last}")

    def _give_back(self, link: Link) -> None:
        with self._lock:
            if not self._closed and self._down_until.get(link.server_index, 0) <= time.monotonic():
                self._idle.append(link)
                return
        link.close()

    def _failed(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = time.monotonic() + DOWN_FOR

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for link in idle:
            link.close()

    # -- one login ---------------------------------------------------------------------
    def authenticate(self, lookup: Lookup, login: str, password: str) -> Verdict:
        """QVD 4's algorithm on the first server that answers; never raises for a
        directory that is down (``unavailable``), raises ``DirectoryConfigError``
        for settings no server could use."""
        if not password:
            return Verdict(False, "empty password (refused before any bind)")
        tried: set[int] = set()
        reason = "no server configured"
        while len(tried) < len(self.servers):
            try:
                link = self._take(tried)
            except LDAPCommunicationError as e:
                reason = str(e)
                break
            try:
                verdict = self._check(link, lookup, login, password)
            except UNREACHABLE as e:
                link.close()
                self._failed(link.server_index)
                tried.add(link.server_index)
                reason = f"{self.servers[link.server_index].name}: {e}"
                continue
            except LDAPInvalidFilterError as e:
                self._give_back(link)
                raise DirectoryConfigError(f"auth.ldap.filter {lookup.filter!r}: {e}") from None
            except BaseException:
                link.close()
                raise
            self._give_back(link)
            return verdict
        return Verdict(False, f"directory unavailable: {reason}", unavailable=True)

    def _bind(self, connection: ldap3.Connection, dn: Optional[str],
              password: Optional[str]) -> bool:
        """(Re)bind ``connection``: simple with ``dn``, anonymous without."""
        connection.user = dn
        connection.password = password
        connection.authentication = ldap3.SIMPLE if dn else ldap3.ANONYMOUS
        return bool(connection.bind())

    def _service_bind(self, link: Link, login: str, password: str) -> Optional[str]:
        """Bind the searcher as the service account (or anonymously); an error text or None."""
        settings = self.settings
        if settings.binddn is None:
            identity: tuple[Optional[str], Optional[str]] = (None, None)
        else:
            identity = (render(settings.binddn, login, escape_dn_value),
                        settings.bindpass if settings.bindpass is not None else password)
        if link.searcher_identity == identity and not settings.service_per_login:
            return None
        link.searcher_identity = None
        if not self._bind(link.searcher, *identity):
            return f"service bind as {identity[0] or 'anonymous'} failed:" \
                   f" {link.searcher.result.get('description')}"
        link.searcher_identity = identity
        return None

    def _check(self, link: Link, lookup: Lookup, login: str, password: str) -> Verdict:
        if lookup.userbindpattern:
            dn = render(lookup.userbindpattern, login, escape_dn_value)
            if self._bind(link.checker, dn, password):
                failure = self._service_bind(link, login, password) if lookup.group else None
                if failure:
                    return Verdict(False, failure, dn)
                return self._in_group(link, lookup, Verdict(True, "direct bind", dn))
        failure = self._service_bind(link, login, password)
        if failure:
            return Verdict(False, failure)
        wanted = ["uid", "uidNumber", "gidNumber", "homeDirectory"]
        if lookup.name_attribute:
            wanted.append(lookup.name_attribute)
        searcher = link.searcher
        searcher.search(
            lookup.base, render(lookup.filter, login, escape_filter_value),
            search_scope=SCOPES[lookup.scope], dereference_aliases=DEREFS[lookup.deref],
            attributes=wanted, size_limit=2, time_limit=math.ceil(self.settings.timeout))
        code = searcher.result.get("result")
        entries = [r for r in searcher.response or () if r.get("type") == "searchResEntry"]
        if code not in (0, SIZE_LIMIT_EXCEEDED):
            return Verdict(False, f"search failed: {searcher.result.get('description')}")
        if not entries:
            return Verdict(False, "no such user in the directory")
        if len(entries) > 1 or code == SIZE_LIMIT_EXCEEDED:
            return Verdict(False, "several directory entries match: "
                                  + "; ".join(e["dn"] for e in entries))
        entry = entries[0]
        verdict = Verdict(True, "search and bind", entry["dn"])
        if not self._bind(link.checker, entry["dn"], password):
            result = link.checker.result
            message = result.get("message") or ""
            if (result.get("result") != INVALID_CREDENTIALS or lookup.racf_allowregex is None
                    or not re.search(lookup.racf_allowregex, message)):
                return Verdict(False, f"bind as {entry['dn']} failed:"
                                      f" {result.get('description')}", entry["dn"])
            verdict.reason = "RACF error accepted by auth.ldap.racf_allowregex"
            verdict.params[RACF_PARAM] = message
        attributes = entry.get("attributes") or {}
        for attribute, param in EXPORTED:
            value = _first(attributes, attribute)
            if value is not None:
                verdict.params[param] = value
                if attribute == "homeDirectory" and lookup.home_set:
                    verdict.params[HOME_PARAM] = value
        if lookup.name_attribute:
            verdict.name = _first(attributes, lookup.name_attribute)
        return self._in_group(link, lookup, verdict)

    def _in_group(self, link: Link, lookup: Lookup, verdict: Verdict) -> Verdict:
        """``verdict``, or a refusal when ``auth.ldap.group`` is set and the user is not in it."""
        if lookup.group is None or not verdict.ok:
            return verdict
        searcher = link.searcher  # bound as the service account by the caller
        target = normal_dn(lookup.group)
        frontier = {verdict.dn or ""}
        seen: set[str] = set()
        depth = lookup.group_depth if lookup.group_nested else 1
        for _ in range(max(1, depth)):
            members = "".join(f"(member={v})(uniqueMember={v})"
                              for v in (escape_filter_value(dn) for dn in sorted(frontier)))
            if lookup.group_nested:
                base = lookup.group_base or _UNESCAPED_COMMA.split(lookup.group, 1)[-1]
                scope = ldap3.SUBTREE
            else:
                base, scope = lookup.group, ldap3.BASE
            searcher.search(base, f"(|{members})", search_scope=scope, attributes=["1.1"],
                            time_limit=math.ceil(self.settings.timeout))
            found = {r["dn"] for r in searcher.response or () if r.get("type") == "searchResEntry"}
            if target in {normal_dn(dn) for dn in found}:
                return verdict
            frontier = found - seen
            seen |= found
            if not frontier:
                break
        return Verdict(False, f"{verdict.dn} is not a member of {lookup.group}"
                              + (" (nested groups searched)" if lookup.group_nested else ""),
                       verdict.dn)
