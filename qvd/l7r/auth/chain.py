"""The plugin chain of a tenant and the ways its hooks combine (reference §2.6).

Chain = ``l7r.auth.plugins.head`` + ``l7r.auth.plugins`` (for the tenant) +
``l7r.auth.plugins.tail``, read live from the configuration.  Names match
``^\\w+$`` and are looked up case-insensitively among ``IAuthPluginFactory``
providers (QVD 4 upper-cased only the first letter, so ``totp`` and ``TOTP``
were different names; here they are the same).  A name listed twice runs once.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Generator, Iterable, Iterator, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.python.failure import Failure

from qvd.config import Config
from qvd.l7r.auth.interface import (
    Auth, AuthError, AuthServices, IAuthPlugin, IAuthPluginFactory, PluginError, Unauthorized,
)

log = Logger()

PLUGIN_KEYS = ("l7r.auth.plugins.head", "l7r.auth.plugins", "l7r.auth.plugins.tail")
_NAME = re.compile(r"\w+", re.ASCII)


def plugin_names(config: Config, tenant_id: int) -> list[str]:
    """The tenant's plugin names in chain order, folded to lower case, without repeats."""
    names: list[str] = []
    for key in PLUGIN_KEYS:
        for name in config.get_list(key, tenant_id):
            if not _NAME.fullmatch(name):
                raise PluginError(f"bad authentication plugin name {name!r} in {key}")
            if name.lower() not in names:
                names.append(name.lower())
    return names


class Plugins:
    """Plugin instances by name, built on first use and shared by every login; each
    tenant's chain is kept until the configuration is reloaded (a login asks for it
    several times, and parsing three lists each time showed in the connect profile)."""

    def __init__(
        self, services: AuthServices, factories: Optional[Iterable[IAuthPluginFactory]] = None
    ):
        self.services = services
        self._factories = None if factories is None else list(factories)
        self._built: dict[str, IAuthPlugin] = {}
        self._chains: dict[int, Chain] = {}
        services.config.add_observer(self._reloaded)

    def chain(self, tenant_id: int) -> Chain:
        chain = self._chains.get(tenant_id)
        if chain is None:
            chain = Chain([(name, self._plugin(name))
                           for name in plugin_names(self.services.config, tenant_id)])
            self._chains[tenant_id] = chain
        return chain

    def _reloaded(self, config: Config) -> None:
        self._chains = {}

    def close(self) -> None:
        """No more logins: stop hearing about reloads."""
        self.services.config.remove_observer(self._reloaded)

    def _plugin(self, name: str) -> IAuthPlugin:
        if name not in self._built:
            factories = {f.name.lower(): f for f in (
                self._factories if self._factories is not None
                else getPlugins(IAuthPluginFactory))}
            if name not in factories:
                raise PluginError(
                    f"unknown authentication plugin {name!r}"
                    f" (installed: {', '.join(sorted(factories)) or 'none'})")
            self._built[name] = factories[name].make_plugin(self.services)
        return self._built[name]


class Chain:
    """One tenant's plugins in order; every hook call goes through ``call``."""

    def __init__(self, plugins: list[tuple[str, IAuthPlugin]]):
        self.plugins = plugins

    def __iter__(self) -> Iterator[tuple[str, IAuthPlugin]]:
        return iter(self.plugins)

    def call(self, name: str, plugin: IAuthPlugin, hook: str, *args: Any) -> defer.Deferred[Any]:
        """One plugin's hook; an unexpected exception becomes a logged ``PluginError``."""

        def failed(failure: Failure) -> Failure:
            if failure.check(Unauthorized, AuthError):
                return failure
            log.failure("authentication plugin {plugin} failed in {hook}", failure,
                        plugin=name, hook=hook)
            raise PluginError(f"authentication plugin {name!r} failed in {hook}")

        return defer.maybeDeferred(getattr(plugin, hook), *args).addErrback(failed)

    @defer.inlineCallbacks
    def first(
        self, hook: str, *args: Any, accept: Callable[[Any], bool] = lambda r: r is not None
    ) -> Generator[defer.Deferred[Any], Any, Any]:
        """The first answer ``accept`` takes (by default: not None), else None."""
        for name, plugin in self.plugins:
            result = yield self.call(name, plugin, hook, *args)
            if accept(result):
                return result
        return None

    @defer.inlineCallbacks
    def any(self, hook: str, *args: Any) -> Generator[defer.Deferred[Any], Any, bool]:
        """True as soon as one plugin says so."""
        return bool((yield self.first(hook, *args, accept=bool)))

    @defer.inlineCallbacks
    def each(self, hook: str, *args: Any) -> Generator[defer.Deferred[Any], Any, None]:
        for name, plugin in self.plugins:
            yield self.call(name, plugin, hook, *args)

    @defer.inlineCallbacks
    def fold(self, hook: str, auth: Auth, value: str) -> Generator[defer.Deferred[Any], Any, str]:
        """``value`` passed through every plugin; None from any of them rejects the login."""
        for name, plugin in self.plugins:
            value = yield self.call(name, plugin, hook, auth, value)
            if value is None:
                raise Unauthorized(f"plugin {name} rejected the value in {hook}")
        return value
