"""The L7R's view of one VM (a ``qvd.db.queries.VM_ROW`` row)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class VMRow:
    id: int
    name: str
    user_id: int
    osf_id: int
    di_tag: str
    host_id: Optional[int]
    vm_state: str
    vm_cmd: Optional[str]
    user_state: str
    user_cmd: Optional[str]
    l7r_host_id: Optional[int]
    l7r_pid: Optional[int]
    blocked: bool
    vm_address: Optional[str]
    vma_port: Optional[int]
    x_port: Optional[int]

    @classmethod
    def of(cls, rows: Sequence[Sequence[Any]]) -> Optional["VMRow"]:
        return cls(*rows[0]) if rows else None
