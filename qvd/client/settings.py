"""What one ``qvd-client`` run uses: client.conf files, environment, command line.

Later sources win, key by key: the built-in defaults (QVD 4's client keys),
``/etc/qvd/client.conf``, ``~/.qvd/client.conf`` (or ``--config``), the
``QVDHOST``/``QVDLOGIN``/``QVDPASSWORD`` variables, then the command line.
Geometry and keyboard left unset everywhere are asked of the local X server
(``display``), so the desktop fits the screen it is shown on.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from qvd.config import Config, ConfigError, load_file, parse_properties

SYSTEM_CONF = "/etc/qvd/client.conf"
USER_CONF = "~/.qvd/client.conf"

# QVD 4's client defaults (QVD-Config-Core), less the GUI's; "(ours)" marks additions.
DEFAULTS = """\
client.host.name =
client.host.port = 8443
client.user.name =
client.use_ssl = 1
client.ssl.use_cert = 0
client.ssl.cert_file =
client.ssl.key_file =
# (ours) PEM file of the CA (or the self-signed certificate) the L7R's certificate must chain to;
# empty = the system's trusted CAs
client.ssl.ca_file =
client.link = adsl
# (ours: empty = the local screen's size; QVD 4 defaults to 1024x768)
client.geometry =
client.fullscreen =
# (ours) model/layout as nxagent takes it; empty = the local X server's
client.keyboard =
client.printing.enable = 1
client.audio.enable =
client.slave.enable = 1
client.slave.command =
# shared folders: client.share.0, client.share.1, ... (numbered from 0, no gaps)
client.file_sharing.enable = 1
# USB devices for the VM (USB/IP): vendor:product[@serial] or bus ids, comma-separated
client.usb.enable =
client.usb.share_list =
client.nxproxy.extra_args =
client.nxagent.extra_args =
command.nxproxy = /usr/bin/nxproxy
command.sftp-server = /usr/lib/openssh/sftp-server
command.open_file = /usr/bin/xdg-open
# (ours) makes this machine's PulseAudio reachable by nxproxy (client.audio.enable)
command.pactl = pactl
command.xhost = /usr/bin/xhost
# local = let every local connection use the display; si = this account's only
command.xhost.family = si
"""


@dataclass
class Settings:
    """Everything a run needs, resolved; ``None`` geometry/keyboard = ask the X server."""

    host: str
    port: int
    use_ssl: bool = True
    user: str = ""
    password: Optional[str] = None
    token: Optional[str] = None
    ca_file: Optional[str] = None
    insecure: bool = False
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    geometry: Optional[str] = None
    fullscreen: bool = False
    link: str = "adsl"
    keyboard: Optional[str] = None
    printing: bool = True
    audio: bool = False
    slave: bool = True
    slave_command: str = ""
    shares: list[str] = field(default_factory=list)
    usb: list[str] = field(default_factory=list)
    sftp_server: str = "/usr/lib/openssh/sftp-server"
    open_command: str = "/usr/bin/xdg-open"
    pactl: str = "pactl"
    nxproxy: str = "/usr/bin/nxproxy"
    nxproxy_args: list[str] = field(default_factory=list)
    xhost: str = "/usr/bin/xhost"
    xhost_family: str = "si"
    nxagent_args: str = ""
    verbose: bool = False

    def client_params(self) -> list[tuple[str, str]]:
        """The ``qvd.client.*`` parameters of connect_to_vm (reference §2.3)."""
        params = [("qvd.client.os", "linux"), ("qvd.client.link", self.link),
                  ("qvd.client.fullscreen", "1" if self.fullscreen else "0"),
                  ("qvd.client.printing.enabled", "1" if self.printing else "0")]
        if self.geometry:
            params.append(("qvd.client.geometry", self.geometry))
        if self.keyboard:
            params.append(("qvd.client.keyboard", self.keyboard))
        if self.nxagent_args:
            params.append(("qvd.client.nxagent.extra_args", self.nxagent_args))
        if self.usb:
            params += [("qvd.client.usb.enabled", "1"), ("qvd.client.usb.implementation", "usbip")]
        return params


def load_client_config(path: Optional[str] = None) -> Config:
    """Defaults, then the system file, then the user's (or ``path``, which must exist)."""
    values = parse_properties(DEFAULTS, "qvd-client defaults")
    if os.path.exists(SYSTEM_CONF):
        values.update(load_file(SYSTEM_CONF))
    user_conf = path or os.path.expanduser(USER_CONF)
    if path or os.path.exists(user_conf):
        values.update(load_file(user_conf))
    return Config(values, user_conf)


def nx_option_words(spec: str) -> list[str]:
    """``-x nx/nx,data=0,cache=16384:0`` (qvdclient's syntax) as nxproxy option words."""
    body = spec.strip()
    if body.startswith("nx/nx,"):
        body = body[len("nx/nx,"):]
    body = body.rsplit(":", 1)[0] if ":" in body else body
    return [word for word in body.split(",") if word]


def config_shares(config: Config) -> list[str]:
    """``client.share.0``, ``.1``... up to the first missing or empty one, if
    ``client.file_sharing.enable``."""
    if not config.get_bool("client.file_sharing.enable"):
        return []
    shares = []
    while config.get(f"client.share.{len(shares)}", default="").strip():
        shares.append(config.get(f"client.share.{len(shares)}").strip())
    return shares


def shared_folders(given: list[str]) -> list[str]:
    """Absolute paths of existing folders, each once, or a ConfigError naming the bad one."""
    folders: list[str] = []
    for path in given:
        folder = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"no folder {path} to share")
        if folder not in folders:
            folders.append(folder)
    return folders


def resolve(config: Config, options: Mapping[str, object],
            env: Mapping[str, str] = os.environ) -> Settings:
    """``Settings`` from the config, the environment and parsed options (None = unset)."""
    def pick(option: str, key: str, variable: Optional[str] = None) -> str:
        given = options.get(option)
        if given is not None:
            return str(given)
        if variable and env.get(variable):
            return env[variable]
        return config.get(key).strip()

    host = pick("host", "client.host.name", "QVDHOST")
    if not host:
        raise ConfigError("no server: give -h HOST, set QVDHOST or client.host.name")
    use_cert = config.get_bool("client.ssl.use_cert")
    cert = options.get("cert") or (config.get("client.ssl.cert_file").strip() if use_cert else "")
    key = options.get("key") or (config.get("client.ssl.key_file").strip() if use_cert else "")
    if bool(cert) != bool(key):
        raise ConfigError("a client certificate needs both -c CERT and -k KEY")
    given_password = options.get("password")
    password = str(given_password) if given_password is not None else env.get("QVDPASSWORD")
    ca_file = options.get("ca") or config.get("client.ssl.ca_file").strip()
    nx_words = nx_option_words(str(options["nx_options"])) if options.get("nx_options") else []
    slave = config.get_bool("client.slave.enable")
    shares = shared_folders(list(options.get("share") or []) + config_shares(config))
    usb = list(options.get("usb") or [])
    if config.get_bool("client.usb.enable"):
        usb += [d for d in config.get_list("client.usb.share_list") if d not in usb]
    if (shares or usb) and not slave:
        raise ConfigError("shared folders and USB devices travel on the slave channel:"
                          " set client.slave.enable = 1")
    return Settings(
        host=host,
        port=int(pick("port", "client.host.port")),
        use_ssl=config.get_bool("client.use_ssl"),
        user=pick("user", "client.user.name", "QVDLOGIN"),
        password=password,
        token=str(options["token"]) if options.get("token") else None,
        ca_file=str(ca_file) or None,
        insecure=bool(options.get("insecure")),
        cert_file=str(cert) or None,
        key_file=str(key) or None,
        geometry=pick("geometry", "client.geometry") or None,
        fullscreen=bool(options.get("fullscreen")) or config.get_bool("client.fullscreen"),
        link=pick("link", "client.link"),
        keyboard=pick("keyboard", "client.keyboard") or None,
        printing=config.get_bool("client.printing.enable"),
        audio=bool(options.get("audio")) or config.get_bool("client.audio.enable"),
        slave=slave,
        slave_command=config.get("client.slave.command").strip(),
        shares=shares,
        usb=usb,
        sftp_server=config.get("command.sftp-server").strip(),
        open_command=config.get("command.open_file").strip(),
        pactl=config.get("command.pactl").strip(),
        nxproxy=config.get("command.nxproxy").strip(),
        nxproxy_args=shlex.split(config.get("client.nxproxy.extra_args")) + nx_words,
        xhost=config.get("command.xhost").strip(),
        xhost_family=config.get("command.xhost.family"),
        nxagent_args=config.get("client.nxagent.extra_args").strip(),
        verbose=bool(options.get("verbose")),
    )
