"""The ``auto`` plugin: a first login creates the user and a VM (reference §4).

It implements only ``after_authenticate_basic``, so it runs after whichever
plugin accepted the password (``l7r.auth.plugins = auto,ldap``), before the
L7R looks the user up.  Differences from QVD 4, on purpose: the OSF of
``auth.auto.osf_id`` must belong to the login's tenant, VM names are checked
for collisions within the tenant (not the whole database), and concurrent
first logins of one user create one user and one VM (``qvd.db.provisioning``).
"""

from __future__ import annotations

from typing import Any, Generator

from twisted.internet import defer
from twisted.logger import Logger

from qvd.config import ConfigError
from qvd.db.provisioning import ProvisioningError, Request, address_range, provision
from qvd.l7r.auth.interface import Auth, AuthError, AuthPlugin, AuthPluginFactory

log = Logger()


class AutoPlugin(AuthPlugin):
    """Creates what a user authenticated elsewhere needs in QVD-DB."""

    @defer.inlineCallbacks
    def after_authenticate_basic(
        self, auth: Auth, login: str
    ) -> Generator[defer.Deferred[Any], Any, None]:
        tenant_id = auth.tenant_id
        assert tenant_id is not None
        try:
            first, last = address_range(self.config)
            request = Request(
                tenant_id=tenant_id, login=login,
                osf_id=self.config.get_int("auth.auto.osf_id", tenant_id),
                di_tag=self.config.get("auth.auto.di_tag", tenant_id),
                max_vms=self.config.get_int("auth.auto.max_vms", tenant_id),
                first_ip=first, last_ip=last)
            made = yield provision(self.database, request)
        except (ConfigError, ProvisioningError) as e:
            raise AuthError(
                f"auto: cannot provision {login} in tenant {auth.tenant}: {e}") from None
        if made.user_created:
            log.info("auto: created user {login} (id {id}) in tenant {tenant}",
                     login=login, id=made.user_id, tenant=auth.tenant)
        if made.vm_id is not None:
            log.info("auto: created VM {name} (id {id}, {ip}) for {login} in tenant {tenant}",
                     name=made.vm_name, id=made.vm_id, ip=made.vm_ip, login=login,
                     tenant=auth.tenant)


auto = AuthPluginFactory("auto", AutoPlugin)
