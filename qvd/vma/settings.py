"""The VMA's view of vma.conf, read once at start into typed fields.

Several VMAs can share a machine (the process hypervisor runs one per VM):
everything that would collide (ports, display, files under ``path.run`` and
``path.log``) comes from these keys, so distinct vma.conf files suffice.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Mapping

from qvd.config import Config

HOOK_KEYS = (
    "vma.on_action.pre-connect",
    "vma.on_action.connect",
    "vma.on_action.suspend",
    "vma.on_action.stop",
    "vma.on_action.poweroff",
    "vma.on_action.expire",
    "vma.on_state.connected",
    "vma.on_state.suspended",
    "vma.on_state.disconnected",
    "vma.on_provisioning.mount_home",
    "vma.on_provisioning.add_user",
    "vma.on_provisioning.after_add_user",
)


@dataclass(frozen=True)
class VMASettings:
    address: str
    port: int
    display: int
    run_dir: str
    log_dir: str
    state_path: str
    pid_path: str
    options_path: str
    slave_config_path: str
    slave_socket: str
    slave_handoff: str
    printing_config_path: str
    pulseaudio_config_path: str
    nxagent_log: str
    hooks_log: str
    xinit: str
    nxagent: str
    x_session: str
    nxdiag: str
    nxagent_extra: list[str]
    x_session_extra: list[str]
    timeouts: Mapping[str, float]
    tolerancechecks: str
    audio: bool
    slave: bool
    printing: bool
    slave_command: str
    shares_path: str
    sshfs_extra: list[str]
    loopback: bool
    extra_args_allowed: frozenset[str]
    default_user: str
    default_groups: str
    home_path: str
    shell: str
    umask: int
    lang: str
    provisioning: bool
    account: str
    account_home: str
    poweroff_command: list[str]
    commands: Mapping[str, str]
    hooks: Mapping[str, str] = field(default_factory=dict)

    @property
    def nx_port(self) -> int:
        """nxagent's proxy port: 4000 + display, as QVD 4 derives it."""
        return 4000 + self.display

    @classmethod
    def from_config(cls, config: Config) -> "VMASettings":
        get = config.get
        address = get("vma.address").strip()
        return cls(
            address="" if address in ("*", "") else address,
            port=config.get_int("internal.vm.port.vma"),
            display=config.get_int("internal.nxagent.display"),
            run_dir=get("path.run"),
            log_dir=get("path.log"),
            state_path=get("internal.vma.nxagent.state"),
            pid_path=get("internal.vma.nxagent.pid"),
            options_path=get("internal.vma.nxagent.config"),
            slave_config_path=get("internal.vma.slave.config"),
            slave_socket=get("internal.vma.slave.socket"),
            slave_handoff=get("internal.vma.slave.handoff"),
            printing_config_path=get("internal.vma.printing.config"),
            pulseaudio_config_path=get("internal.vma.pulseaudio.config"),
            nxagent_log=get("internal.vma.nxagent.log"),
            hooks_log=get("internal.vma.hooks.log"),
            xinit=get("command.xinit"),
            nxagent=get("command.nxagent"),
            x_session=get("command.x-session"),
            nxdiag=get("command.nxdiag"),
            nxagent_extra=shlex.split(get("command.nxagent.args.extra")),
            x_session_extra=shlex.split(get("command.x-session.args.extra")),
            timeouts={
                name: config.get_float(f"internal.nxagent.timeout.{name}")
                for name in ("initiating", "listening", "suspending", "stopping")
            },
            tolerancechecks=get("internal.vma.nxagent.tolerancechecks"),
            audio=config.get_bool("vma.audio.enable"),
            slave=config.get_bool("vma.slave.enable"),
            printing=config.get_bool("vma.printing.enable"),
            slave_command=get("vma.slave.command").strip(),
            shares_path=get("vma.user.shares.path").strip(),
            sshfs_extra=shlex.split(get("vma.sshfs.extra_args")),
            loopback=config.get_bool("vma.nxagent.loopback"),
            extra_args_allowed=frozenset(config.get_list("vma.nxagent.extra_args.allowed")),
            default_user=get("vma.user.default.name"),
            default_groups=get("vma.user.default.groups"),
            home_path=get("vma.user.home.path"),
            shell=get("vma.user.shell"),
            umask=int(get("vma.user.umask"), 8),
            lang=get("vma.default.lang"),
            provisioning=config.get_bool("vma.user.provisioning"),
            account=get("vma.user.account").strip(),
            account_home=get("vma.user.account.home").strip(),
            poweroff_command=shlex.split(get("vma.poweroff.command")),
            commands={
                name: get(f"command.{name}")
                for name in ("useradd", "userdel", "groupadd", "groupdel", "timedatectl", "sshfs",
                             "sftp-server", "open_file", "pulseaudio", "fusermount")
            },
            hooks={key: get(key).strip() for key in HOOK_KEYS if get(key).strip()},
        )
