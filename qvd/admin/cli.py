"""``qa``: the QVD administration command line (``qa4`` syntax).

    qa [-c node.conf] [--format table|json|csv] <object> [<filters>] <action> [<arguments>]
    qa --api URL [--login L --password P --tenant T] <object> ... | login | logout | password

Direct mode (no --api, no qa.url in qa.conf) works straight on QVD-DB with the
node's database credentials: for root on a node.  API mode goes through QVD's
administration API with an administrator's rights (``qvd.admin.api_mode``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, Optional, Sequence, TextIO

from qvd.admin import qaconf
from qvd.admin.api_mode import Credentials, RemoteAdmin
from qvd.admin.command import UsageError, parse_command
from qvd.admin.objects import KINDS
from qvd.admin.ops import Admin, AdminError, Result
from qvd.admin.remote import APIClient, APIUnreachable
from qvd.config import Config, ConfigError
from qvd.admin.usage import usage
from qvd.db import SCHEMA_VERSIONS, DatabaseError, connect_sync
from qvd.db.configs import apply_configs_now

EPILOG = """\
modes: without --api (and without qa.url in qa.conf) qa works directly on QVD-DB
       with node.conf's database credentials: for root on a node.  With --api URL
       it goes through the administration API as the administrator logged in
       ('qa --api URL login', or --login/--password/--tenant, or qa.conf).
objects: {objects}; with --api also role, acl, admin, property
commands: usage [<command>], version
actions: new, get, set, del, block, unblock, di tag/untag, config ssl,
         <object> <filters> set property k=v, get property, del property k,
         user <filter> totp new|del (TOTP second factor: secret, URI, QR code)
filters: = != < > <= >= ~ (LIKE), [a,b] lists, [a:b] ranges, ',' AND, ';' OR,
         '!' NOT, parentheses; a bare word means name=<word>
examples:
  qa vm "user~qvd%,state=stopped" get
  qa user new login=peter,password=s3cr3t
  qa config set tenant_id=-1,key=vm.network.ip.start,value=10.3.15.50
""".format(objects=", ".join(KINDS))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def render_table(result: Result) -> str:
    """The manual's ``+---+`` table followed by ``Total: N``."""
    if not result.columns:
        return f"Total: {result.total}\n"
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    body = [rule, line(result.columns), rule] + [line(r) for r in cells] + [rule]
    return (result.text or "") + "\n".join(body) + f"\nTotal: {result.total}\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)  # QVD's JSON carries integers, not booleans
    if isinstance(value, (int, float, str)) or value is None:
        return value
    return str(value)


def render_json(result: Result) -> str:
    document: dict[str, Any] = {"total": result.total}
    if result.created_id is not None:
        document["id"] = result.created_id
    if result.failures:
        document["failures"] = {str(k): v for k, v in sorted(result.failures.items())}
    if result.columns:
        document["rows"] = [
            {c: _json_value(v) for c, v in zip(result.columns, row)} for row in result.rows
        ]
    return json.dumps(document, ensure_ascii=False) + "\n"


def render_csv(result: Result) -> str:
    """qa4's CSV: a header line, then one line per row, fields separated by ';'."""
    lines = [";".join(result.columns)] + [";".join(_cell(v) for v in row) for row in result.rows]
    return "\n".join(lines) + "\n" if result.columns else f"{result.total}\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa", description="QVD administration (qa4 syntax), on QVD-DB or through the API.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config",
                        help="node.conf to read (default: $QVD_CONFIG or /etc/qvd/node.conf)")
    parser.add_argument("-f", "--format", type=str.lower,
                        choices=("table", "json", "csv"), default=None)
    parser.add_argument("-u", "--api", "--url", dest="url",
                        help="the administration API, e.g. https://node:443/ (qa.url)")
    parser.add_argument("-l", "--login", help="administrator (qa.login)")
    parser.add_argument("-p", "--password", help="its password (qa.password)")
    parser.add_argument("-t", "--tenant", help="its tenant's name, '*' for superadmins (qa.tenant)")
    parser.add_argument("--ca", help="CA certificate of the API (qa.ca)")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the API's certificate (qa.insecure)")
    parser.add_argument("--force", action="store_true",
                        help="allow changes without a filter (they apply to every object)")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="<object> ... <action> ...")
    return parser


def _api_session(args: argparse.Namespace, conf: dict[str, str], stdout: TextIO,
                 stderr: TextIO) -> int:
    """``qa --api``: login, logout and password, or one command."""
    client = APIClient(args.url, ca=args.ca or conf.get("qa.ca"),
                       insecure=args.insecure or qaconf.flag(conf, "qa.insecure"))
    credentials = Credentials(args.login or conf.get("qa.login"),
                              args.password or conf.get("qa.password"),
                              args.tenant or conf.get("qa.tenant"))
    words = args.words
    if words and words[0] == "login":
        return _login(client, credentials, stdout)
    if not (args.login or args.password):
        credentials.sid = qaconf.saved_sid(client.url)
    admin = RemoteAdmin(client, credentials, force=args.force)
    if words and words[0] == "logout":
        admin.client.call({**credentials.keys()}, "/api/logout")
        qaconf.save_sid(client.url, None)
        stdout.write("logged out\n")
        return 0
    if words and words[0] == "password":
        new = words[1] if len(words) > 1 else getpass.getpass("new password: ")
        admin.call("myadmin_update", arguments={"password": new})
        stdout.write("password changed\n")
        return 0
    if words and words[0] == "version":
        stdout.write(str(client.call({}, "/api/info").get("version", {}).get("database")) + "\n")
        return 0
    command = parse_command(words)
    result = admin.run(command)
    _report(result, args.format or conf.get("qa.format", "table").lower(), stdout, stderr)
    return 0


def _login(client: APIClient, credentials: Credentials, stdout: TextIO) -> int:
    info = client.call({}, "/api/info")
    login = credentials.login or input("login: ")
    tenant = credentials.tenant
    if info.get("multitenant") and not tenant:
        tenant = input("tenant: ")
    password = credentials.password or getpass.getpass("password: ")
    keys = {"action": "current_admin_setup", "login": login, "password": password,
            "parameters": {"source": "CLI"}}
    if tenant:
        keys["tenant"] = tenant
    answer = client.call(keys)
    if answer.get("status") != 0:
        raise AdminError(answer.get("message", "login failed"))
    qaconf.save_sid(client.url, answer["sid"])
    stdout.write(f"logged in as {answer['admin_name']} (tenant {answer['tenant_name']})\n")
    return 0


def _usage(words: list[str], stdout: TextIO, stderr: TextIO) -> int:
    try:
        stdout.write(usage(words[1] if len(words) > 1 else None))
    except ValueError as e:
        print(f"qa: {e}", file=stderr)
        return 2
    return 0


def _report(result: Result, fmt: Optional[str], stdout: TextIO, stderr: TextIO) -> None:
    """The result, and (in table or CSV form) what it left alone and why, on stderr."""
    render = {"json": render_json, "csv": render_csv}.get(fmt or "table", render_table)
    stdout.write(render(result))
    if render is not render_json:
        for reason in result.failures.values():
            print(f"qa: {reason}", file=stderr)


def _schema_version(conn: Any) -> str:
    with conn, conn.cursor() as cur:
        cur.execute(SCHEMA_VERSIONS)
        return ", ".join(row[0] for row in cur.fetchall()) or "none"


def main(argv: Optional[Sequence[str]] = None, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    if args.words and args.words[0] == "usage":
        return _usage(args.words, stdout, stderr)
    conf = qaconf.read()
    args.url = args.url or conf.get("qa.url")
    if args.url:
        try:
            return _api_session(args, conf, stdout, stderr)
        except UsageError as e:
            print(f"qa: {e}", file=stderr)
            return 2
        except (AdminError, APIUnreachable, EOFError) as e:
            print(f"qa: {e}", file=stderr)
            return 1
    version = args.words == ["version"]
    try:
        command = None if version else parse_command(args.words)
    except UsageError as e:
        print(f"qa: {e}", file=stderr)
        return 2
    try:
        config = Config.load(args.config)
        conn = connect_sync(config, "qa")
        try:
            if command is None:
                stdout.write(_schema_version(conn) + "\n")
                return 0
            apply_configs_now(conn, config)  # DB values (e.g. the salt) win over node.conf
            result = Admin(conn, config).run(command)
        finally:
            conn.close()
    except (AdminError, ConfigError, DatabaseError) as e:
        print(f"qa: {e}", file=stderr)
        return 1
    _report(result, args.format, stdout, stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
