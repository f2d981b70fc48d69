"""The L7R's TLS context: certificate, key, protocol floor, ciphers, client certs.

PEM material comes from the ``ssl_configs`` table (``qa config ssl``) when
it holds ``l7r.ssl.cert`` and ``l7r.ssl.key``, else from the files
``path.l7r.ssl.*``.  A key file other users can read is refused: a node
must not start with a leaked-by-permissions key.  TLS 1.2 is the floor
whatever ``l7r.options.SSL_version`` says.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.ssl import ContextFactory
from twisted.logger import Logger

from qvd.config import Config

log = Logger()

_VERSIONS = {
    "TLSv1_2": SSL.TLS1_2_VERSION,
    "TLSv1_3": SSL.TLS1_3_VERSION,
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


def minimum_version(spec: str) -> int:
    """The floor named by an IO::Socket::SSL-style spec, never below TLS 1.2."""
    wanted = [_VERSIONS[token] for token in spec.split(":") if token in _VERSIONS]
    floor = min(wanted) if wanted else SSL.TLS1_2_VERSION
    return max(floor, SSL.TLS1_2_VERSION)


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


def build_context(config: Config) -> SSL.Context:
    """A server context from the configuration, or ``TLSConfigError``."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(minimum_version(config.get("l7r.options.SSL_version")))
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)  # idle sessions keep no TLS buffers
    try:
        context.set_cipher_list(config.get("l7r.options.SSL_cipher_list").encode("ascii"))
        context.use_certificate(x509.load_pem_x509_certificate(_material(config, "cert")))
        context.use_privatekey(serialization.load_pem_private_key(_material(config, "key"),
                                                                  password=None))
        context.check_privatekey()
    except (SSL.Error, crypto.Error, ValueError, TypeError) as e:
        raise TLSConfigError(f"unusable L7R TLS certificate, key or ciphers: {e}") from None
    if config.get_bool("l7r.client.cert.require"):
        _require_client_certificates(config, context)
    return context


def _require_client_certificates(config: Config, context: SSL.Context) -> None:
    ca = _material(config, "ca")
    if ca is None:
        raise TLSConfigError("l7r.client.cert.require = 1 needs a CA: set l7r.ssl.ca"
                             " (qa config ssl ca=FILE) or create path.l7r.ssl.ca")
    store = context.get_cert_store()
    try:
        for certificate in x509.load_pem_x509_certificates(ca):
            store.add_cert(crypto.X509.from_cryptography(certificate))
        crl = _material(config, "crl")
        if crl is not None:
            store.add_crl(x509.load_pem_x509_crl(crl))
            store.set_flags(crypto.X509StoreFlags.CRL_CHECK)
    except (crypto.Error, ValueError) as e:
        raise TLSConfigError(f"unusable L7R client CA or CRL: {e}") from None
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: args[-1])


class L7RContextFactory(ContextFactory):
    """Twisted's view of the context, built once at start (errors stop the start)."""

    isClient = 0

    def __init__(self, config: Config):
        self._context = build_context(config)

    def getContext(self) -> SSL.Context:
        return self._context
