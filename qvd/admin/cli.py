"""``qa``: the QVD administration command line (``qa4`` syntax), straight on QVD-DB.

    qa [-c node.conf] [--format table|json] <object> [<filters>] <action> [<arguments>]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence, TextIO

from qvd.admin.command import UsageError, parse_command
from qvd.admin.objects import KINDS
from qvd.admin.ops import Admin, AdminError, Result
from qvd.config import Config, ConfigError
from qvd.db import DatabaseError, connect_sync
from qvd.db.configs import apply_configs_now

EPILOG = """\
objects: {objects}
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
    if result.columns:
        document["rows"] = [
            {c: _json_value(v) for c, v in zip(result.columns, row)} for row in result.rows
        ]
    return json.dumps(document, ensure_ascii=False) + "\n"


def main(argv: Optional[Sequence[str]] = None, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    parser = argparse.ArgumentParser(
        prog="qa", description="QVD administration (qa4 syntax) on QVD-DB.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config",
                        help="node.conf to read (default: $QVD_CONFIG or /etc/qvd/node.conf)")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="<object> ... <action> ...")
    args = parser.parse_args(argv)
    try:
        command = parse_command(args.words)
    except UsageError as e:
        print(f"qa: {e}", file=stderr)
        return 2
    try:
        config = Config.load(args.config)
        conn = connect_sync(config, "qa")
        try:
            apply_configs_now(conn, config)  # DB values (e.g. the salt) win over node.conf
            result = Admin(conn, config).run(command)
        finally:
            conn.close()
    except (AdminError, ConfigError, DatabaseError) as e:
        print(f"qa: {e}", file=stderr)
        return 1
    render = render_json if args.format == "json" else render_table
    stdout.write(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
