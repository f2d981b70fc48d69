"""What ``qvd-client`` says when the L7R refuses, against a real ``twistd qvd-l7r``.

The L7R runs without its HKD, so the host stays ``stopped`` as QVD-DB says,
which is one of the refusals under test; the others need no running VM.
"""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks

from qvd.embedded import ensure_certificate
from tests.support.node import NodeTestCase


class ErrorTests(NodeTestCase):
    timeout = 90

    @inlineCallbacks
    def refused(self, status: int, sentence: str, *args: str, **kwargs):
        """A run that fails with exit ``status`` and ``sentence`` on stderr; its stderr."""
        code, out, err = yield self.run_client(*args, **kwargs)
        self.assertEqual(code, status, err)
        self.assertIn(f"qvd-client: {sentence}", err)
        self.assertEqual(out, "")
        return err

    @inlineCallbacks
    def test_refusals(self):
        yield self.start_node("qvd-l7r")
        err = yield self.refused(3, "Wrong user name or password.", "-l", "-d",
                                 user=("alice", "wrong"))
        self.assertIn("HTTP 401", err)
        err = yield self.refused(
            4, "The server is stopped and accepts no connections now: try again later.", "-l")
        self.assertNotIn("HTTP 503", err)

        self.db.query("UPDATE host_runtimes SET state = 'running', ok_ts = now()")
        code, out, err = yield self.run_client("-l")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"\d+  desk +stopped +no")

        self.qa("vm name=desk block")
        err = yield self.refused(
            5, "The virtual machine is blocked (offline for maintenance): try again later or ask"
            " your administrator.", "--vm", "desk", "-d")
        self.assertIn("HTTP 403: The requested virtual machine is offline for maintenance", err)
        yield self.refused(5, "You have no virtual machine 'nosuch' (yours: desk).",
                           "--vm", "nosuch")

        self.qa("host name=test-node block")
        yield self.refused(4, "The server is blocked for maintenance: try again later.", "-l")

    @inlineCallbacks
    def test_certificates_and_unreachable_servers(self):
        yield self.start_node("qvd-l7r")
        self.db.query("UPDATE host_runtimes SET state = 'running', ok_ts = now()")
        other_key = os.path.join(self.root, "other", "key.pem")
        other_cert = os.path.join(self.root, "other", "cert.pem")
        ensure_certificate(other_key, other_cert, "localhost")
        yield self.refused(4, "The certificate of 127.0.0.1:", "-l", tls=["--ca", other_cert])
        code, out, err = yield self.run_client("-l", "--json", tls=["-n"])
        self.assertEqual(code, 0, err)
        self.assertIn('"name": "desk"', out)

        yield self.node.kill("TERM")
        yield self.refused(4, f"Cannot reach the QVD server at 127.0.0.1:{self.port}", "-l")

    @inlineCallbacks
    def test_client_certificate(self):
        """With ``l7r.client.cert.require`` the L7R wants a certificate its CA signed."""
        client_key = os.path.join(self.root, "client", "key.pem")
        client_cert = os.path.join(self.root, "client", "cert.pem")
        ensure_certificate(client_key, client_cert, "alice")
        with open(self.conf, "a") as f:
            f.write(f"l7r.client.cert.require = 1\npath.l7r.ssl.ca = {client_cert}\n")
        yield self.start_node("qvd-l7r")
        self.db.query("UPDATE host_runtimes SET state = 'running', ok_ts = now()")
        yield self.refused(4, "The secure connection to 127.0.0.1:", "-l")
        code, out, err = yield self.run_client("-l", "-c", client_cert, "-k", client_key)
        self.assertEqual(code, 0, err)
        self.assertIn("desk", out)
