"""The L7R's TLS context: certificate, key, protocol floor, ciphers, client certs.

PEM material comes from the ``ssl_configs`` table (``qa config ssl``) when
it holds ``l7r.ssl.cert`` and ``l7r.ssl.key``, else from the files
``path.l7r.ssl.*``.  A key file other users can read is refused: a node
must not start with a leaked-by-permissions key.  TLS 1.2 is the floor
whatever ``l7r.options.SSL_version`` says.

The context is the stdlib's (``ssl``, on the system OpenSSL): the L7R runs TLS
on its accepted sockets itself (``qvd.stream.transport``).  OpenSSL loads
certificates, keys and CRLs from files only, so material from the database is
written to a private temporary directory for the load and removed at once.
"""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import tempfile
from typing import Optional

from qvd.config import Config

_VERSIONS = {
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


class TLSConfigError(Exception):
    """The TLS material or options cannot be used; the message says which and why."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read the L7R TLS {what} {path}: {e.strerror}") from None


def _check_key_file(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise TLSConfigError(f"cannot read the L7R TLS key {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TLSConfigError(
            f"the L7R TLS key {path} is accessible to other users (mode"
            f" {stat.S_IMODE(mode):04o}); refusing to use it: chmod 600 {path}")


def minimum_version(spec: str) -> ssl.TLSVersion:
    """The floor named by an IO::Socket::SSL-style spec, never below TLS 1.2."""
    wanted = [_VERSIONS[token] for token in spec.split(":") if token in _VERSIONS]
    return max(min(wanted) if wanted else ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)


def _material(config: Config, name: str) -> Optional[bytes]:
    """PEM ``name`` (cert, key, ca, crl) from ssl_configs, else its file (None if absent)."""
    if config.has(f"l7r.ssl.{name}"):
        return config.get(f"l7r.ssl.{name}").encode("ascii")
    path = config.get(f"path.l7r.ssl.{name}")
    if name in ("ca", "crl") and not os.path.exists(path):
        return None
    if name == "key":
        _check_key_file(path)
    return _read(path, name)


def server_context(config: Config) -> ssl.SSLContext:
    """A server context from the configuration, or ``TLSConfigError``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = minimum_version(config.get("l7r.options.SSL_version"))
    # compression is off by default; renegotiation only costs us (and is an attack surface)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    # a TCP end without a close_notify is a loss, not a close (Python sets the opposite)
    context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    cert, key = _material(config, "cert"), _material(config, "key")
    directory = tempfile.mkdtemp(prefix="qvd-l7r-tls-")  # mode 0700: the key stays ours
    try:
        try:
            context.set_ciphers(config.get("l7r.options.SSL_cipher_list"))
            context.load_cert_chain(_file(directory, "cert.pem", cert),
                                    _file(directory, "key.pem", key))
        except (ssl.SSLError, ValueError) as e:
            raise TLSConfigError(f"unusable L7R TLS certificate, key or ciphers: {e}") from None
        if config.get_bool("l7r.client.cert.require"):
            _require_client_certificates(config, context, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return context


def _file(directory: str, name: str, pem: Optional[bytes]) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem or b"")
    return path


def _require_client_certificates(config: Config, context: ssl.SSLContext,
                                 directory: str) -> None:
    ca = _material(config, "ca")
    if ca is None:
        raise TLSConfigError("l7r.client.cert.require = 1 needs a CA: set l7r.ssl.ca"
                             " (qa config ssl ca=FILE) or create path.l7r.ssl.ca")
    try:
        context.load_verify_locations(cafile=_file(directory, "ca.pem", ca))
        crl = _material(config, "crl")
        if crl is not None:
            context.load_verify_locations(cafile=_file(directory, "crl.pem", crl))
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    except (ssl.SSLError, ValueError) as e:
        raise TLSConfigError(f"unusable L7R client CA or CRL: {e}") from None
    context.verify_mode = ssl.CERT_REQUIRED
