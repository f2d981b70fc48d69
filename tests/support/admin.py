"""``qa`` as the tests run it: one command line on a node.conf, in this process."""

from __future__ import annotations

import io
import shlex

from qvd.admin.cli import main as qa_main


def qa(conf: str, line: str) -> str:
    """``qa -c conf <line>`` (shell words), which must succeed; its output."""
    out, err = io.StringIO(), io.StringIO()
    code = qa_main(["-c", conf] + shlex.split(line), out, err)
    if code != 0:
        raise AssertionError(f"qa {line}: {err.getvalue().strip()}")
    return out.getvalue()


def qa_refused(conf: str, line: str) -> str:
    """The one-line error of a ``qa`` command line that must fail (status 1)."""
    out, err = io.StringIO(), io.StringIO()
    code = qa_main(["-c", conf] + shlex.split(line), out, err)
    if code != 1:
        raise AssertionError(f"qa {line}: exit status {code}, not 1")
    return err.getvalue().strip()
