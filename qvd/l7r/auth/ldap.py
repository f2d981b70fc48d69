"""The ``ldap`` plugin: passwords checked against LDAP or Active Directory (reference §3).

Every ``auth.ldap.*`` key is read for the login's tenant on each login, so
``qa config set`` takes effect at once.  ldap3 blocks, so the directory work
runs in this plugin's own thread pool (``auth.ldap.threads`` threads: at most
that many logins talk to directories at once; the others wait their turn)
and never on the reactor.  Connections are kept per set of servers and
reused (``qvd.ldap.directory``).

A directory that cannot be reached makes this plugin say no, with a warning
in the log, and the chain goes on (so a local ``default`` account still
works); the client gets the usual 401 within the configured timeouts.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Generator, Optional

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from qvd.config import Config, ConfigError
from qvd.reactor import default_reactor
from qvd.l7r.auth.interface import Auth, AuthError, AuthPlugin, AuthPluginFactory, AuthServices
from qvd.ldap.directory import Directory, DirectoryConfigError, Lookup, Servers, Verdict

log = Logger()

CASE_SENSITIVE_KEY = "model.user.login.case-sensitive"
THREADS_KEY = "auth.ldap.threads"
KEPT_DIRECTORIES = 8  # sets of servers whose connections are kept (tenants may differ)


def _optional(config: Config, key: str, tenant_id: Optional[int]) -> Optional[str]:
    """A key's value, None when unset or empty."""
    value = config.get(key, tenant_id, "")
    return value if value.strip() else None


def _without_path(host: str) -> str:
    """``ldap[s]://host:port`` of an LDAP URL (ldap3 takes no path, not even ``/``)."""
    match = re.match(r"(ldaps?://[^/]*)/", host, re.I)
    return match.group(1) if match else host


def read_servers(config: Config, tenant_id: Optional[int]) -> Servers:
    """The tenant's ``Servers`` (``auth.ldap.host`` may list several, blank or comma separated)."""
    listed = re.split(r"[\s,]+", config.get("auth.ldap.host", tenant_id))
    hosts = tuple(_without_path(host) for host in listed if host)
    return Servers(
        hosts=hosts,
        starttls=config.get_bool("auth.ldap.starttls", tenant_id),
        ca_file=_optional(config, "auth.ldap.tls.ca", tenant_id),
        verify=config.get_bool("auth.ldap.tls.verify", tenant_id),
        connect_timeout=config.get_float("auth.ldap.timeout.connect", tenant_id),
        timeout=config.get_float("auth.ldap.timeout", tenant_id),
        binddn=_optional(config, "auth.ldap.binddn", tenant_id),
        bindpass=_optional(config, "auth.ldap.bindpass", tenant_id),
    )


def read_lookup(config: Config, tenant_id: Optional[int]) -> Lookup:
    """The tenant's ``Lookup``; ``DirectoryConfigError`` for values no directory takes."""
    normalize = (config.get_bool("auth.ldap.name.normalize", tenant_id)
                 or config.get_bool("auth.ldap.normalize.name", tenant_id))
    lookup = Lookup(
        base=config.get("auth.ldap.base", tenant_id),
        filter=config.get("auth.ldap.filter", tenant_id),
        scope=config.get("auth.ldap.scope", tenant_id).strip().lower(),
        deref=config.get("auth.ldap.deref", tenant_id).strip().lower(),
        userbindpattern=_optional(config, "auth.ldap.userbindpattern", tenant_id),
        racf_allowregex=_optional(config, "auth.ldap.racf_allowregex", tenant_id),
        name_attribute=config.get("auth.ldap.name.attribute", tenant_id) if normalize else None,
        home_set=config.get_bool("auth.ldap.home.set", tenant_id),
        group=_optional(config, "auth.ldap.group", tenant_id),
        group_nested=config.get_bool("auth.ldap.group.nested", tenant_id),
        group_base=_optional(config, "auth.ldap.group.base", tenant_id),
        group_depth=config.get_int("auth.ldap.group.depth", tenant_id),
    )
    lookup.check()
    return lookup


class LdapPlugin(AuthPlugin):
    """``authenticate_basic`` against the tenant's directory; exports the entry's params."""

    def __init__(self, services: AuthServices):
        super().__init__(services)
        clock = services.clock
        self.reactor = clock if IReactorFromThreads.providedBy(clock) else default_reactor()
        self.pool = ThreadPool(minthreads=0, maxthreads=max(1, self.config.get_int(THREADS_KEY)),
                               name="qvd-ldap")
        self.pool.start()
        self._directories: OrderedDict[Servers, Directory] = OrderedDict()
        self._shutdown = self.reactor.addSystemEventTrigger("before", "shutdown", self.close)

    def _directory(self, servers: Servers) -> Directory:
        directory = self._directories.pop(servers, None) or Directory(servers)
        self._directories[servers] = directory
        while len(self._directories) > KEPT_DIRECTORIES:
            _, old = self._directories.popitem(last=False)
            self.pool.callInThread(old.close)
        return directory

    @defer.inlineCallbacks
    def authenticate_basic(
        self, auth: Auth, login: str, password: str
    ) -> Generator[defer.Deferred[Any], Any, bool]:
        if not password:  # never an unauthenticated bind (RFC 4513 5.1.2)
            log.info("ldap: refused {login}: empty password", login=login)
            return False
        try:
            servers = read_servers(self.config, auth.tenant_id)
            lookup = read_lookup(self.config, auth.tenant_id)
            directory = self._directory(servers)
            verdict: Verdict = yield threads.deferToThreadPool(
                self.reactor, self.pool, directory.authenticate, lookup, login, password)
        except (ConfigError, DirectoryConfigError) as e:  # a 500, logged without a traceback
            raise AuthError(f"ldap: tenant {auth.tenant}: {e}") from None
        if not verdict.ok:
            if verdict.unavailable:
                log.warn("ldap: cannot check {login} in tenant {tenant}: {reason}",
                         login=login, tenant=auth.tenant, reason=verdict.reason)
            else:
                log.info("ldap: refused {login} in tenant {tenant}: {reason}",
                         login=login, tenant=auth.tenant, reason=verdict.reason)
            return False
        auth.params.update(verdict.params)
        if verdict.name:
            name = verdict.name.strip()
            if not self.config.get_bool(CASE_SENSITIVE_KEY, auth.tenant_id):
                name = name.lower()
            auth.login = name
        log.debug("ldap: {login} accepted as {dn} ({how})", login=login, dn=verdict.dn,
                  how=verdict.reason)
        return True

    def close(self) -> defer.Deferred[None]:
        """Close the kept connections and stop the threads (at reactor shutdown, or by tests)."""
        if self._shutdown is not None:
            self.reactor.removeSystemEventTrigger(self._shutdown)
            self._shutdown = None
        directories = list(self._directories.values())
        self._directories.clear()

        def close_all() -> None:
            for directory in directories:
                directory.close()

        d = threads.deferToThreadPool(self.reactor, self.pool, close_all)
        d.addBoth(lambda _: self.pool.stop())
        return d


ldap = AuthPluginFactory("ldap", LdapPlugin)
