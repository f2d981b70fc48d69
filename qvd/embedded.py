"""``qvd-embedded``: a complete node on one machine, with nothing set up beforehand.

``setup`` creates (or restarts) a PostgreSQL cluster under the data
directory, writes a ``node.conf`` for it, deploys QVD-DB and loads demo data
(this machine as a host, user ``demo``/``demo`` in tenant ``default``, an
OSF, a DI and a VM).  Running it again keeps everything already there.
"""

from __future__ import annotations

import argparse
import io
import os
import pwd
import re
import secrets
import socket
import stat
import subprocess
import sys
import tarfile
from typing import Optional, Sequence


from qvd.admin.command import parse_command
from qvd.admin.ops import Admin, AdminError
from qvd.certificates import write_self_signed
from qvd.config import Config, ConfigError, load_file
from qvd.db import DatabaseError, connect_sync
from qvd.db.configs import apply_configs_now
from qvd.db.deploy import deploy, deployed_version
from qvd.pgcluster import ClusterError, LocalCluster, port_in_use
from qvd.stream.sockets import free_port

SYSTEM_CONF = "/etc/qvd/node.conf"
MARKER = "# written by qvd-embedded"
DB_USER = DB_NAME = "qvd"
DEMO_IMAGE = "qvd-demo-desktop.tar.gz"


def _marker_line(data: str) -> str:
    return f"{MARKER} for the node in {data}; your edits are kept."


def _conf_text(data: str, port: int, password: str) -> str:
    return f"""{_marker_line(data)}
nodename = {socket.gethostname()}
database.host = 127.0.0.1
database.port = {port}
database.name = {DB_NAME}
database.user = {DB_USER}
database.password = {password}
path.run = {data}/run
path.log = {data}/log
path.storage.root = {data}/storage
path.api.ssl = {data}/run/api/ssl
vm.hypervisor = process
# the desktop reaches the user's machine: shared folders, printing, sound (docs/client.md)
vma.slave.enable = 1
vma.printing.enable = 1
vma.audio.enable = 1
"""


def _choose_port() -> int:
    return 5432 if not port_in_use(5432) else free_port()


def ensure_node_conf(data: str, port: Optional[int] = None) -> str:
    """``<data>/node.conf``, created with a fresh password and port on first run."""
    path = os.path.join(data, "node.conf")
    if not os.path.exists(path):
        os.makedirs(data, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_conf_text(data, port or _choose_port(), secrets.token_urlsafe(24)))
    return path


def system_conf_owner(target: str) -> Optional[str]:
    """Whose ``target`` is: None if there is none, the data directory of the embedded
    node that wrote it, or ``""`` for an administrator's own file."""
    if not os.path.exists(target):
        return None
    with open(target) as f:
        first = f.readline()
    match = re.fullmatch(re.escape(MARKER) + r" for the node in (.*); your edits are kept\.\n?",
                         first)
    return match.group(1) if match else ""


def publish_system_conf(conf_path: str, target: str, data: str) -> bool:
    """Copy node.conf to ``target`` unless an administrator's own file, or another
    embedded node's, is there."""
    if system_conf_owner(target) not in (None, data):
        return False
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(conf_path) as src:
        text = src.read()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def grant_traversal(path: str, account: str) -> list[str]:
    """Let ``account`` reach ``path``: ACL search rights on closed ancestors."""
    changed = []
    user = pwd.getpwnam(account)
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        st = os.stat(parent)
        if not (st.st_mode & stat.S_IXOTH) and st.st_uid != user.pw_uid:
            subprocess.run(["setfacl", "-m", f"u:{account}:x", parent], check=True)
            changed.append(parent)
        if parent == "/":
            return changed
        parent = os.path.dirname(parent)


def ensure_session_account(name: str) -> bool:
    """The unprivileged account process-hypervisor sessions run as; True if created."""
    try:
        pwd.getpwnam(name)
        return False
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                    "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    return True


def ensure_certificate(key_path: str, cert_path: str, nodename: str,
                       addresses: Sequence[str] = ()) -> bool:
    """A self-signed L7R certificate for this machine (and ``addresses``, the IPs it is
    also reached at), if none is there; True if made."""
    if os.path.exists(key_path) and os.path.exists(cert_path):
        return False
    write_self_signed(key_path, cert_path, [nodename, "localhost", "127.0.0.1", *addresses],
                      days=825)
    return True


def _demo_image(staging: str) -> str:
    """A small DI file; the ``process`` hypervisor runs VMs without unpacking it."""
    os.makedirs(staging, exist_ok=True)
    path = os.path.join(staging, DEMO_IMAGE)
    if not os.path.exists(path):
        note = b"Demo disk image for the QVD process hypervisor (no root filesystem needed).\n"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("README")
            info.size = len(note)
            tar.addfile(info, io.BytesIO(note))
    return path


# What --hypervisor lxc|kvm sets in node.conf: the VMs' network is QVD 4's default one
# (10.0.0.0/16, VMs from 10.0.0.100) with this node as its gateway on bridge qvdnet.
VIRT_KEYS = {"vm.network.gateway": "10.0.0.1"}


def set_keys(path: str, values: dict[str, str]) -> None:
    """Give ``key = value`` lines of node.conf these values, added where missing."""
    with open(path) as f:
        lines = f.read().splitlines(True)
    missing = dict(values)
    for i, line in enumerate(lines):
        key = line.split("=", 1)[0].strip()
        if "=" in line and key in missing:
            lines[i] = f"{key} = {missing.pop(key)}\n"
    lines += [f"{key} = {value}\n" for key, value in missing.items()]
    with open(path, "w") as f:
        f.write("".join(lines))


def load_desktop(conn, config: Config, image: str) -> list[str]:
    """OSF ``desktop`` with ``image`` as its DI and the demo user's VM ``desktop`` on it."""
    admin = Admin(conn, config)
    if admin.run(parse_command(["osf", "name=desktop,tenant=default", "get"])).total:
        return []
    for command in (["osf", "new", "name=desktop,tenant=default,memory=1024,user_storage=1024"],
                    ["di", "new", f"path={os.path.abspath(image)},osf=desktop"],
                    ["vm", "new", "name=desktop,user=demo,osf=desktop"]):
        admin.run(parse_command(command))
    return ["OSF, DI and VM desktop"]


def load_demo(conn, config: Config) -> list[str]:
    """Create whatever of the demo data is missing; say what was created."""
    admin = Admin(conn, config)
    nodename = config.get("nodename")
    image = _demo_image(config.get("path.storage.staging"))
    steps = [
        ("host", f"name={nodename}", ["host", "new", f"name={nodename},address=127.0.0.1"]),
        ("osf", "name=demo", ["osf", "new", "name=demo,tenant=default"]),
        ("di", "osf=demo,tenant=default", ["di", "new", f"path={image},osf=demo"]),
        ("user", "login=demo,tenant=default",
         ["user", "new", "login=demo,password=demo,tenant=default"]),
        ("vm", "name=demo,user=demo", ["vm", "new", "name=demo,user=demo,osf=demo"]),
    ]
    created = []
    for obj, existing, command in steps:
        if admin.run(parse_command([obj, existing, "get"])).total == 0:
            admin.run(parse_command(command))
            created.append(obj)
    return created


def setup(data: str, port: Optional[int] = None, system_conf: str = SYSTEM_CONF,
          hypervisor: Optional[str] = None, image: Optional[str] = None) -> str:
    data = os.path.abspath(data)
    conf_path = ensure_node_conf(data, port)
    if hypervisor:
        set_keys(conf_path, {"vm.hypervisor": hypervisor,
                             **(VIRT_KEYS if hypervisor != "process" else {})})
    values = load_file(conf_path)
    cluster = LocalCluster(root=os.path.join(data, "postgresql"),
                           port=int(values["database.port"]), host=values["database.host"])
    if os.geteuid() == 0:
        grant_traversal(cluster.root, "postgres")
    cluster.init()
    cluster.start()
    cluster.ensure_role_and_database(values["database.user"], values["database.password"],
                                     values["database.name"])
    config = Config(values, conf_path)
    conn = connect_sync(config, "qvd-embedded")
    try:
        if deployed_version(conn) is None:
            deploy(conn)
        conn.rollback()
        apply_configs_now(conn, config)
        created = load_demo(conn, config)
        if image:
            created += load_desktop(conn, config, image)
        vm = Admin(conn, config).run(parse_command(["vm", "name=demo,user=demo", "get", "id"]))
    finally:
        conn.close()
    if os.geteuid() == 0 and ensure_session_account(config.get("vm.process.account")):
        created.append(f"account {config.get('vm.process.account')}")
    if ensure_certificate(config.get("path.l7r.ssl.key"), config.get("path.l7r.ssl.cert"),
                          config.get("nodename")):
        created.append("self-signed L7R certificate")
    if ensure_certificate(config.get("path.api.ssl.key"), config.get("path.api.ssl.cert"),
                          config.get("nodename")):
        created.append("self-signed API certificate")
    published = bool(system_conf) and publish_system_conf(conf_path, system_conf, data)
    return _summary(data, conf_path, system_conf, published, values, created,
                    vm.rows[0][0], config.get("path.l7r.ssl.cert"))


def _summary(data: str, conf_path: str, system_conf: str, published: bool, values: dict,
             created: list[str], vm_id: int, config_cert: str) -> str:
    owner = system_conf_owner(system_conf) if system_conf and not published else None
    if published:
        conf_note = f" (also {system_conf})"
    else:
        conf_note = (f"\n             to use it: qa -c {conf_path} ... (or export"
                     f" QVD_CONFIG={conf_path})")
        if owner:
            conf_note += (f"\n             {system_conf} was left alone: it is the embedded node"
                          f" in {owner}'s")
        elif owner == "":
            conf_note += f"\n             {system_conf} was left alone: it is your own"
    made = f"created now: {', '.join(created)}" if created else "already there"
    return (
        "QVD node ready on embedded defaults\n"
        f"  database   {values['database.name']} on {values['database.host']}:"
        f"{values['database.port']}, PostgreSQL cluster in {data}/postgresql (running)\n"
        f"  config     {conf_path}{conf_note}\n"
        f"  L7R TLS    {config_cert} (self-signed: clients need it as CA, or --insecure)\n"
        f"  demo data  host {values['nodename']}, tenant default, user demo / password demo,"
        f" OSF demo, DI, VM demo (id {vm_id}) — {made}\n"
        "  try        qa vm get\n"
        "  API        log in as superadmin / superadmin (tenant '*'): README, 'The administration API'\n"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qvd-embedded", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("setup", "stop"))
    parser.add_argument("--data", default=os.path.join(os.getcwd(), "data"),
                        help="data directory (default: ./data)")
    parser.add_argument("--port", type=int,
                        help="PostgreSQL port for a new cluster (default: 5432, or a free one)")
    parser.add_argument("--system-conf", default=SYSTEM_CONF,
                        help=f"also publish node.conf here unless it is an administrator's"
                             f" own file; '' for nowhere (default: {SYSTEM_CONF})")
    parser.add_argument("--hypervisor", choices=("process", "lxc", "kvm"),
                        help="set vm.hypervisor in node.conf (lxc, kvm: and the VM network,"
                             " 10.0.0.0/16 with this node as gateway)")
    parser.add_argument("--image", help="a DI (qvd-di build) for OSF, DI and VM 'desktop'")
    args = parser.parse_args(argv)
    try:
        if args.action == "setup":
            print(setup(args.data, args.port, args.system_conf, args.hypervisor, args.image),
                  end="")
        else:
            conf = load_file(os.path.join(os.path.abspath(args.data), "node.conf"))
            LocalCluster(os.path.join(os.path.abspath(args.data), "postgresql"),
                         int(conf["database.port"])).stop()
            print("embedded PostgreSQL stopped")
    except (ClusterError, ConfigError, DatabaseError, AdminError, OSError,
            subprocess.CalledProcessError) as e:
        print(f"qvd-embedded: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
