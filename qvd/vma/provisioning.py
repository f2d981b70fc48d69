"""Which account a session runs as, creating it first where that is allowed.

Real VMs and containers (``vma.user.provisioning = 1``, VMA as root): the
home and the user named by ``qvd.vm.user.name`` are created on first use
with the ``mount_home``/``add_user``/``after_add_user`` hooks or
``groupadd``/``useradd`` (reference §4.3), and whatever was created is
removed again if a later step fails.

The process hypervisor (``vma.user.provisioning = 0``): VMs share the
node's accounts, so nothing is ever created, changed or deleted; every
session runs as ``vma.user.account`` (never root) in its per-VM home.
A VMA not running as root can only run sessions as itself.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet import interfaces
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from qvd.http.simplerpc import RPCError
from qvd.vma import spawn
from qvd.vma.hooks import Hooks
from qvd.vma.settings import VMASettings

_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,10}", re.ASCII)


class ProvisioningError(RPCError):
    pass


@dataclass(frozen=True)
class SessionAccount:
    name: str
    home: str
    uid: Optional[int]  # None: the VMA's own identity, no switch
    gid: Optional[int]


def _param(params: dict, key: str, pattern: re.Pattern) -> str:
    value = (params.get(key) or "").strip()
    if value and not pattern.fullmatch(value):
        raise ProvisioningError(f"invalid value for {key}\n")
    return value


def _exists(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
        return True
    except KeyError:
        return False


def _home_path(params: dict) -> str:
    home = params.get("qvd.vm.user.home") or ""
    if not os.path.isabs(home) or os.path.normpath(home) != home.rstrip("/"):
        raise ProvisioningError("invalid value for qvd.vm.user.home\n")
    return home


def _with_home(name: str, home: str, uid: Optional[int], gid: Optional[int]) -> SessionAccount:
    """The account, its home created (owned by the session user) if missing."""
    if not os.path.isdir(home):
        os.makedirs(home, mode=0o700)
        if uid is not None:
            os.chown(home, uid, gid)
    return SessionAccount(name, home, uid, gid)


class Provisioner:
    log = Logger()

    def __init__(self, reactor: interfaces.IReactorProcess, settings: VMASettings, hooks: Hooks):
        self.reactor = reactor
        self.settings = settings
        self.hooks = hooks

    @property
    def provisions(self) -> bool:
        """Only a root VMA configured for it creates accounts."""
        return self.settings.provisioning and os.geteuid() == 0

    def apply_defaults(self, params: dict) -> None:
        """Fill in ``qvd.vm.user.*`` as the hooks and the session will see them;
        a shared account overrides whatever the caller sent."""
        if self.provisions:
            user = params.setdefault("qvd.vm.user.name", self.settings.default_user)
            params.setdefault("qvd.vm.user.groups", self.settings.default_groups)
            params.setdefault("qvd.vm.user.home", f"{self.settings.home_path}/{user}")
        else:
            entry = self._shared_entry()
            params["qvd.vm.user.name"] = entry.pw_name
            params["qvd.vm.user.home"] = self.settings.account_home or entry.pw_dir

    def _shared_entry(self) -> pwd.struct_passwd:
        if self.settings.provisioning or not self.settings.account:
            return pwd.getpwuid(os.geteuid())
        try:
            entry = pwd.getpwnam(self.settings.account)
        except KeyError:
            raise ProvisioningError(f"session account {self.settings.account} does not exist\n")
        if entry.pw_uid == 0:
            raise ProvisioningError("vma.user.account must not be root\n")
        if os.geteuid() not in (0, entry.pw_uid):
            raise ProvisioningError(f"only root can run sessions as {entry.pw_name}\n")
        return entry

    def account(self, params: dict, provisioning: Callable[[], None]) -> Deferred:
        """The ``SessionAccount`` for ``apply_defaults``-ed params (``provisioning()``
        is called before anything slow is created, to report that state)."""
        if self.provisions:
            return self._provision(params, provisioning)
        return maybeDeferred(self._shared_account, params)

    def _shared_account(self, params: dict) -> SessionAccount:
        entry = self._shared_entry()
        uid, gid = (entry.pw_uid, entry.pw_gid) if os.geteuid() == 0 else (None, None)
        return _with_home(entry.pw_name, params["qvd.vm.user.home"], uid, gid)

    @inlineCallbacks
    def _provision(self, params: dict, provisioning: Callable[[], None]):
        user = _param(params, "qvd.vm.user.name", _NAME)
        if not user:
            raise ProvisioningError("invalid value for qvd.vm.user.name\n")
        group = _param(params, "qvd.vm.user.group", _NAME) or user
        uid = _param(params, "qvd.vm.user.uid", _DIGITS)
        gid = _param(params, "qvd.vm.user.gid", _DIGITS)
        groups = re.sub(r"\s+", "", params.get("qvd.vm.user.groups") or "")
        if groups and not all(_NAME.fullmatch(g) for g in groups.split(",")):
            raise ProvisioningError("invalid value for qvd.vm.user.groups\n")
        home = _home_path(params)
        pairs = list(params.items())

        if not os.path.isdir(home):
            provisioning()
            yield self.hooks.provisioning("mount_home", pairs)
        if not _exists(pwd.getpwnam, user):
            provisioning()
            had_group = _exists(grp.getgrnam, group)
            try:
                if self.hooks.configured("vma.on_provisioning.add_user"):
                    yield self.hooks.provisioning("add_user", pairs)
                else:
                    yield self._add_user(user, group, uid, gid, groups, home, had_group)
                yield self.hooks.provisioning("after_add_user", pairs)
            except Exception:
                yield self._roll_back(user, group, had_group)
                raise
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ProvisioningError(f"user {user} was not created\n")
        return _with_home(user, home, entry.pw_uid, entry.pw_gid)

    def _command(self, name: str, *args: str) -> Deferred:
        return spawn.run(self.reactor, [self.settings.commands[name], *args], self.settings.hooks_log)

    @inlineCallbacks
    def _add_user(self, user, group, uid, gid, groups, home, had_group):
        if not had_group:
            code = yield self._command("groupadd", *(["-g", gid] if gid else []), group)
            if code:
                self.log.warn("groupadd {group} failed ({code})", group=group, code=code)
        args = ["-m", "-d", home, "-g", group, "-s", self.settings.shell]
        args += (["-G", groups] if groups else []) + (["-u", uid] if uid else []) + [user]
        code = yield self._command("useradd", *args)
        if code:
            raise ProvisioningError(f"useradd {user} failed with exit code {code}\n")

    @inlineCallbacks
    def _roll_back(self, user: str, group: str, had_group: bool):
        if _exists(pwd.getpwnam, user):
            yield self._command("userdel", "-rf", user)
        if not had_group and _exists(grp.getgrnam, group):
            yield self._command("groupdel", group)
