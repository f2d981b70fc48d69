"""Every way a run can fail, as one sentence a user can act on, and an exit status.

The L7R's error bodies are QVD 4's fixed texts (reference §2.3-2.4), so
they are matched here; anything unknown is still shown, with its HTTP
status.  ``detail`` (the status and the server's own words) is printed in
verbose mode.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Optional

from OpenSSL import SSL
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from qvd.client.l7r import ConnectionClosed, ProtocolError, Reply


class Exit(IntEnum):
    """Exit statuses of ``qvd-client`` (documented in docs/client.md)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    AUTH = 3
    SERVER = 4
    VM = 5
    TAKEN_OVER = 6


class ClientError(Exception):
    def __init__(self, message: str, status: Exit = Exit.FAILED, detail: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


# (body pattern, sentence, exit status); the first match wins.  \1 is the pattern's group.
_MESSAGES: list[tuple[str, str, Exit]] = [
    (r"Host is not registered in the database",
     "This server is not registered in QVD's database: tell your administrator.", Exit.SERVER),
    (r"The database is not available",
     "The server cannot reach its database just now: try again in a moment.", Exit.SERVER),
    (r"Server is blocked",
     "The server is blocked for maintenance: try again later.", Exit.SERVER),
    (r"The HKD of this node is not running",
     "The server cannot start virtual machines just now (its house-keeping daemon is not"
     " running): try again later or tell your administrator.", Exit.SERVER),
    (r"Server is (\w+)",
     r"The server is \1 and accepts no connections now: try again later.", Exit.SERVER),
    (r"The requested virtual machine is offline for maintenance",
     "The virtual machine is blocked (offline for maintenance): try again later or ask"
     " your administrator.", Exit.VM),
    (r"The requested virtual machine does not exist",
     "The virtual machine does not exist (any more).", Exit.VM),
    (r"You are not allowed to access requested virtual machine",
     "You are not allowed to use this virtual machine.", Exit.VM),
    (r"Unable to acquire VM, close other clients",
     "Another client holds this virtual machine and did not let go: close it and retry.",
     Exit.VM),
    (r"Aborted by contending session",
     "Another client took this virtual machine over while this one was connecting.",
     Exit.TAKEN_OVER),
    (r"The requested virtual machine is not available: (.*), retry later\.",
     r"The virtual machine is not available (\1): retry later.", Exit.VM),
    (r"The requested virtual machine is in an unstoppable state \((\w+)\)",
     r"The virtual machine cannot be stopped while it is \1.", Exit.VM),
    (r"VM didn't reach state 'stopped'",
     "The virtual machine did not stop in time: try again later.", Exit.VM),
    (r"Invalid parameters (.*)",
     r"The server refused parameters of this client (\1).", Exit.FAILED),
]


def from_reply(reply: Reply, bearer: bool = False) -> ClientError:
    """The error an unexpected L7R reply stands for."""
    detail = f"HTTP {reply.status}: {reply.text}"
    if reply.status == 401:
        message = ("The authentication token is not valid (any more): create a new one."
                   if bearer else "Wrong user name or password.")
        return ClientError(message, Exit.AUTH, detail)
    if reply.status in (426, 505):
        return ClientError("This client is too old for the server: upgrade qvd-client.",
                           Exit.FAILED, detail)
    for pattern, sentence, status in _MESSAGES:
        match = re.search(pattern, reply.text)
        if match:
            return ClientError(match.expand(sentence), status, detail)
    if reply.status >= 500:
        return ClientError(f"The server failed ({reply.text or reply.status}).",
                           Exit.SERVER, detail)
    return ClientError(f"The server refused the request: {reply.text or reply.status}.",
                       Exit.FAILED, detail)


def from_failure(failure: Failure, where: str) -> ClientError:
    """A network, TLS or protocol failure talking to ``where`` (host:port)."""
    value = failure.value
    if isinstance(value, ClientError):
        return value
    text = failure.getErrorMessage()
    if failure.check(SSL.Error) or type(value).__name__ == "VerificationError":
        if "certificate verify failed" in text or type(value).__name__ == "VerificationError":
            return ClientError(
                f"The certificate of {where} could not be verified: give its CA with --ca FILE"
                " (or skip the check with -n, at your own risk).", Exit.SERVER, text)
        return ClientError(f"The secure connection to {where} failed: {text}", Exit.SERVER, text)
    if failure.check(net_error.DNSLookupError):
        return ClientError(f"Unknown server name in {where}.", Exit.SERVER, text)
    if failure.check(net_error.ConnectError, net_error.TimeoutError):
        return ClientError(f"Cannot reach the QVD server at {where}: is it running?",
                           Exit.SERVER, text)
    if failure.check(ConnectionClosed, net_error.ConnectionLost, ProtocolError):
        return ClientError(f"The connection to {where} broke off: {text}", Exit.SERVER, text)
    return ClientError(f"Unexpected failure talking to {where}: {text}", Exit.FAILED,
                       failure.getTraceback())
