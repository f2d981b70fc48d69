"""Take-over of a VM whose session row names this very L7R process.

When a second client connects, ``acquire_session`` marks the row ``abort`` and
NOTIFYs the holder's channel.  If the holder is this process, the NOTIFY can
reach ``check_aborts`` (which ends the old session and resets the row) before
the connect handler reads the holder back.  The handler then finds no
registered session for a row that still names its pid; the new client must
still be told that a contending session is being aborted, then get the VM.
The same state is left by a session row this process leaked.
"""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import defer

from tests.support.rawclient import connect
from tests.l7r.test_conformance import L7RTestCase

CONNECT = (b"GET /qvd/connect_to_vm?id=10000 HTTP/1.1\n"
           b"Authorization: Basic YWxpY2U6czNjcmV0\n"  # alice:s3cret
           b"Connection: Upgrade\nUpgrade: QVD/1.0\n\n")


class TakeoverOfOwnRowTests(L7RTestCase):
    # No HKD heartbeats here: after the take-over no host can be assigned.
    conf = "internal.l7r.poll_time.vm = 0.1\n"

    def session_row(self) -> tuple:
        return self.node.sql("SELECT user_state, user_cmd, l7r_host_id, l7r_pid"
                             " FROM vm_runtimes WHERE vm_id = 10000")[0]

    @defer.inlineCallbacks
    def test_row_of_this_process_without_its_session(self) -> Generator[Any, Any, None]:
        self.node.sql("UPDATE host_runtimes SET ok_ts = NULL")  # no HKD: no candidate host
        self.node.sql("UPDATE vm_runtimes SET user_state = 'connected', l7r_host_id = %s,"
                      " l7r_pid = %s WHERE vm_id = 10000", (self.node.host_id, os.getpid()))
        client = yield connect(self.node.port)
        client.send(CONNECT)
        reply = yield client.response()
        yield client.close()
        infos = [value for _, headers in reply.interim
                 for name, value in headers if name == "X-QVD-VM-Info"]
        self.assertIn("Aborting contending session for VM_ID: 10000", infos)
        self.assertIn("Session acquired for VM_ID: 10000", infos)
        self.assertLess(infos.index("Aborting contending session for VM_ID: 10000"),
                        infos.index("Session acquired for VM_ID: 10000"))
        self.assertEqual(reply.status, 503, reply.body)
        self.assertIn(b"no host available", reply.body)
        self.assertEqual(self.session_row(), ("disconnected", None, None, None))
