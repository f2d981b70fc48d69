"""The X session's log keeps what xinit's children say after xinit itself has exited."""

from __future__ import annotations

import io

from twisted.internet.error import ProcessDone
from twisted.python.failure import Failure
from twisted.trial import unittest

from qvd.vma.session import _XinitProtocol


class FakeXSession:
    """A fake of ``XSession`` (the protocol alone is under test): records what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ended = 0

    def output_line(self, xinit: _XinitProtocol, line: str) -> None:
        self.lines.append(line)

    def exited(self, xinit: _XinitProtocol) -> None:
        self.ended += 1


class XinitOutputTests(unittest.TestCase):
    def test_output_after_xinit_exits_is_logged_and_the_log_closes_at_the_end(self) -> None:
        log = io.BytesIO()
        log.close = lambda: setattr(log, "closed_at_end", True)  # keep the bytes readable
        session = FakeXSession()
        xinit = _XinitProtocol(session, log)
        xinit.childDataReceived(1, b"Session: Starting session at 'Tue Dec  1'.\n")
        xinit.processExited(Failure(ProcessDone(0)))
        # nxagent, xinit's child, still holds stderr and says its last words:
        xinit.childDataReceived(2, b"Info: Aborting the procedure due to signal '15'.\n")
        self.assertFalse(getattr(log, "closed_at_end", False))
        xinit.processEnded(Failure(ProcessDone(0)))

        self.assertTrue(log.closed_at_end)
        self.assertEqual(session.ended, 1)
        self.assertIn(b"X session ended", log.getvalue())
        self.assertTrue(log.getvalue().endswith(b"signal '15'.\n"))
        self.assertEqual(session.lines[-1], "Info: Aborting the procedure due to signal '15'.")
