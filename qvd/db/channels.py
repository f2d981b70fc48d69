"""The NOTIFY channels of QVD-DB (reference: the daemons' LISTEN/NOTIFY bus), one home
for their names; a node's channels end with its ``hosts.id``."""

from __future__ import annotations

from twisted.internet import defer

from qvd.db.pool import Database

CONFIG_CHANGED = "qvd_config_changed"
HOST_COMMANDS = "qvd_cmd_for_host"  # + host id: host_runtimes.cmd for the HKD
VM_COMMANDS = "qvd_cmd_for_vm_on_host"  # + host id: vm_runtimes.vm_cmd for the HKD
USER_COMMANDS = "qvd_cmd_for_user_on_host"  # + host id: vm_runtimes.user_cmd for the L7Rs
LOG_CREATED = "qvd_log_created"  # ours: audit rows were written (payload tenant_id=N)

# What a transaction runs to notify one channel (the blocking tools run it too).
NOTIFY = "SELECT pg_notify(%s, '')"


def host_commands(host_id: int) -> str:
    return f"{HOST_COMMANDS}{host_id}"


def vm_commands(host_id: int) -> str:
    return f"{VM_COMMANDS}{host_id}"


def user_commands(host_id: int) -> str:
    return f"{USER_COMMANDS}{host_id}"


def notify(db: Database, channel: str) -> defer.Deferred[None]:
    return db.run_operation(NOTIFY, (channel,))
