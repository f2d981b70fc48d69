"""The real ``twistd -n qvd-l7r`` with TLS: a key file others can read stops it with one
clear line; a private key and a valid certificate give a TLS 1.2+ only ``/qvd/ping``."""

from __future__ import annotations

import os
import re
import ssl
import sys
from typing import Any, Generator

from twisted.internet import defer, reactor, threads
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.support.l7r import ALIVE_BODY, make_node, self_signed, tls_conf, tls_get
from tests.support.paths import ROOT
from tests.support.rawclient import WAIT
from tests.support.paths import TWISTD

LISTENING = re.compile(rb"L7R listening on 127\.0\.0\.1:(\d+) \(TLS\)")


class Twistd(ProcessProtocol):
    """``twistd -n qvd-l7r``: its output, its port once it listens, its exit."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else reason.value.exitCode
        if not self.listening.called:
            self.listening.errback(AssertionError(f"exited ({code}): {self.output.decode()}"))
        self.ended.callback(code)


class TLSStartTests(unittest.TestCase):
    def setUp(self) -> None:
        self.node = make_node(self)
        self.directory = os.path.dirname(self.node.conf)

    def twistd(self, key_mode: int) -> tuple[Twistd, str, str]:
        cert, key = self_signed(self.directory, key_mode)
        with open(self.node.conf, "a") as f:
            f.write("l7r.use_ssl = 1\n" + tls_conf(cert, key))
        child = Twistd()
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "qvd-l7r",
                "--config", self.node.conf]
        process = reactor.spawnProcess(child, argv[0], argv, path=self.directory,
                                       env=dict(os.environ, PYTHONPATH=ROOT))

        def stop() -> defer.Deferred[int]:
            if not child.ended.called:
                process.signalProcess("TERM")
            return child.ended

        self.addCleanup(stop)
        return child, cert, key

    @defer.inlineCallbacks
    def test_readable_key_refused(self) -> Generator[defer.Deferred[Any], Any, None]:
        child, _, key = self.twistd(0o644)
        code = yield child.ended.addTimeout(WAIT * 3, reactor)
        self.assertNotEqual(code, 0)
        yield self.assertFailure(child.listening, AssertionError)
        self.assertEqual(child.output.decode().strip().splitlines(), [
            f"qvd-l7r cannot start: the L7R TLS key {key} is accessible to other users"
            f" (mode 0644); refusing to use it: chmod 600 {key}"])

    @defer.inlineCallbacks
    def test_private_key_serves_tls_1_2_and_up(self) -> Generator[defer.Deferred[Any], Any, None]:
        child, cert, _ = self.twistd(0o600)
        port = yield child.listening.addTimeout(WAIT * 3, reactor)
        for version in (None, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            reply = yield threads.deferToThread(tls_get, port, cert, version=version)
            self.assertEqual((reply.status, reply.body), (200, ALIVE_BODY), version)
        with self.assertRaises(ssl.SSLError) as refused:
            yield threads.deferToThread(tls_get, port, cert, version=ssl.TLSVersion.TLSv1_1)
        # the server refused it (a client refusing to offer TLS 1.1 would fail otherwise)
        self.assertEqual(refused.exception.reason, "TLSV1_ALERT_PROTOCOL_VERSION")
        self.assertFalse(child.ended.called)
        self.assertNotIn(b"Traceback", child.output)
