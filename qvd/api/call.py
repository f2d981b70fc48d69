"""One authenticated API call: who makes it, with which rights, asking what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from twisted.internet import defer

from qvd.api.acls import Permissions
from qvd.api.model import Model
from qvd.api.query import Scope
from qvd.audit import AuditEntry
from qvd.db.administrators import Administrator

LOG_TYPES = {"list": "see", "state": "see", "ad_hoc": "see", "multiple": "see",
             "create": "create", "update": "update", "delete": "delete",
             "create_or_update": "create_or_update", "exec": "exec"}


@dataclass(frozen=True)
class Action:
    """A row of QVD 4's action table (reference §2.1)."""

    name: str
    type: str
    handler: Callable[["Call"], defer.Deferred[dict]]
    acls: tuple[str, ...] = ()
    model: Optional[Model] = None
    channels: tuple[str, ...] = ()
    log_object: Optional[str] = None
    superadmin_only: bool = False  # hosts serve every tenant: only superadmins change them

    @property
    def qvd_object(self) -> str:
        if self.log_object:
            return self.log_object
        return self.model.log_object if self.model is not None else "config"

    @property
    def reads(self) -> bool:
        return LOG_TYPES[self.type] == "see"


@dataclass
class Call:
    api: Any  # qvd.api.dispatch.API
    action: Action
    admin: Administrator
    permissions: Permissions
    params: dict[str, Any]
    peer: str
    scope: Scope

    @property
    def database(self) -> Any:
        return self.api.database

    @property
    def config(self) -> Any:
        return self.api.config

    @property
    def arguments(self) -> Any:
        return self.params.get("arguments") or {}

    @property
    def source(self) -> Optional[str]:
        parameters = self.params.get("parameters")
        source = parameters.get("source") if isinstance(parameters, dict) else None
        return source if isinstance(source, str) else None

    def entry(self, status: int, *, object_id: Optional[int] = None,
              object_name: Optional[str] = None, tenant_id: Optional[int] = None,
              tenant_name: Optional[str] = None, arguments: Any = None,
              action: Optional[str] = None) -> AuditEntry:
        """An audit row for this call (the object's tenant if known, else the admin's)."""
        return AuditEntry(
            action=action or self.action.name, type_of_action=LOG_TYPES[self.action.type],
            qvd_object=self.action.qvd_object, status=status,
            administrator_id=self.admin.id, administrator_name=self.admin.name,
            superadmin=self.admin.superadmin,
            tenant_id=self.admin.tenant_id if tenant_id is None else tenant_id,
            tenant_name=self.admin.tenant_name if tenant_id is None else tenant_name,
            object_id=object_id, object_name=None if object_name is None else str(object_name),
            arguments=self.params.get("arguments") if arguments is None else arguments,
            source=self.source, ip=self.peer)
