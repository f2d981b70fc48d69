"""``qvd-doctor [-c node.conf] [--format text|json]``: exit status 0 only when every check
passes (a skipped check is not a pass)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence, TextIO

from qvd.doctor.checks import Finding, examine

MARKS = {"ok": "[ ok ]", "problem": "[FAIL]", "skipped": "[skip]"}


def render_text(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{MARKS[finding.status]} {finding.check}: {finding.message}")
        if finding.fix:
            lines.append(f"       fix: {finding.fix}")
    problems = sum(1 for f in findings if f.status == "problem")
    lines.append("qvd-doctor: all checks pass" if all(f.ok for f in findings) else
                 f"qvd-doctor: {problems} problem{'s' if problems != 1 else ''} found")
    return "\n".join(lines) + "\n"


def render_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": all(f.ok for f in findings),
                       "problems": sum(1 for f in findings if f.status == "problem"),
                       "checks": [f.as_dict() for f in findings]}, indent=2) + "\n"


def main(argv: Optional[Sequence[str]] = None, stdout: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="qvd-doctor", description="Check this QVD node; every problem comes with its fix.")
    parser.add_argument("-c", "--config",
                        help="node.conf to read (default: $QVD_CONFIG or /etc/qvd/node.conf)")
    parser.add_argument("-f", "--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    findings = list(examine(args.config))
    stdout.write((render_json if args.format == "json" else render_text)(findings))
    return 0 if all(f.ok for f in findings) else 1


if __name__ == "__main__":
    sys.exit(main())
