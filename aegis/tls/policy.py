"""TLS policy: how every Aegis TLS server context is configured.

Twisted's ``CertificateOptions`` defaults fail Mozilla's "intermediate" configuration (they
offer CBC and CCM suites and the X448/P-521 groups), so Aegis builds its pyOpenSSL contexts
itself, here, and nowhere else.

API
===
* :class:`TLSPolicy` — a frozen value: minimum version (``"1.2"`` or ``"1.3"``) and the ALPN
  protocols offered, in server preference order. :data:`INTERMEDIATE` is Mozilla
  "intermediate" 6.0 (TLS 1.2 + 1.3); :data:`TLS13_ONLY` the 1.3-only variant.
* :func:`policy_context` — a fresh ``SSL.Context`` with the policy applied and no certificate
  (a context without a certificate is also how the SNI layer *refuses* a handshake).
* :func:`certificate_context` — a policy context serving one
  :class:`~aegis.certs.model.LoadedCertificate` and its chain.
* :class:`SingleCertificateCreator` — an ``IOpenSSLServerConnectionCreator`` for a listener
  with one certificate: pass it to ``TLSMemoryBIOFactory`` or use
  :func:`single_certificate_factory` (with the 10 s handshake deadline of
  :mod:`aegis.tls.transport`).

What the policy sets, and why
=============================
* Protocols: TLS 1.2 minimum (1.3 for :data:`TLS13_ONLY`); SSLv3/TLS 1.0/1.1 never.
* TLS 1.2 suites: exactly the six ECDHE AEAD suites (:data:`TLS12_CIPHERS`); TLS 1.3 suites:
  the three standard ones. Client preference, as Mozilla intermediate asks (every suite
  offered is strong, and clients without AES hardware prefer ChaCha20).
* Key-exchange groups: X25519MLKEM768 first when the linked OpenSSL knows it (pyOpenSSL links
  cryptography's bundled OpenSSL), then X25519, P-256, P-384. pyOpenSSL has no
  ``set_groups``; ``SSL_CTX_set1_curves_list`` (the same OpenSSL call as ``set1_groups_list``)
  is reached through the binding pyOpenSSL already uses.
* No compression (CRIME), no renegotiation (client-initiated renegotiation is a DoS lever and
  nothing here needs it).
* Resumption: stateful, from the in-process session cache (1 day, as Mozilla recommends), with
  session tickets off. OpenSSL never rotates the ticket key of a long-lived context, which
  would give every resumed session of the process's lifetime one key to break; a server-side
  cache expires entries instead. TLS 1.3 resumption keeps working (OpenSSL then issues
  stateful tickets).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from aegis.certs.model import LoadedCertificate
from aegis.tls.socket_tls import install_alpn
from aegis.tls.transport import DEFAULT_HANDSHAKE_TIMEOUT, TimedTLSFactory

TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
BASE_GROUPS = ("X25519", "P-256", "P-384")
PQ_GROUPS = ("X25519MLKEM768",)
SESSION_TIMEOUT = 86400
SESSION_ID_CONTEXT = b"aegis"
DEFAULT_ALPN = (b"h2", b"http/1.1")

_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
_OPTIONS = (
    SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1
    | SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_TICKET
    | SSL.OP_SINGLE_ECDH_USE
)


class TLSPolicyError(Exception):
    """The linked OpenSSL cannot apply the policy (a build without a required feature)."""


@dataclass(frozen=True)
class TLSPolicy:
    """What a TLS server context allows. ``alpn`` is in server preference order; empty
    means no ALPN extension is answered."""

    min_version: str = "1.2"
    alpn: tuple[bytes, ...] = DEFAULT_ALPN

    def __post_init__(self) -> None:
        if self.min_version not in _VERSIONS:
            raise ValueError(f"unsupported minimum TLS version {self.min_version!r}")
        object.__setattr__(self, "alpn", tuple(self.alpn))


INTERMEDIATE = TLSPolicy()
TLS13_ONLY = TLSPolicy(min_version="1.3")


def version_number(name: str) -> int:
    """The OpenSSL protocol number for a policy version name (``"1.2"`` → 0x0303)."""
    return _VERSIONS[name]


@lru_cache(maxsize=1)
def supported_groups() -> tuple[str, ...]:
    """The key-exchange groups Aegis offers with the linked OpenSSL, most preferred first.

    Probed once: the post-quantum hybrid is included only if this OpenSSL accepts it.
    """
    probe = SSL.Context(SSL.TLS_METHOD)
    groups = [group for group in PQ_GROUPS if _set_groups(probe, (group,))]
    _lib.ERR_clear_error()
    return (*groups, *BASE_GROUPS)


def _set_groups(context: SSL.Context, groups: tuple[str, ...]) -> bool:
    joined = ":".join(groups).encode("ascii")
    return bool(_lib.SSL_CTX_set1_curves_list(context._context, joined))


def policy_context(policy: TLSPolicy = INTERMEDIATE) -> SSL.Context:
    """A new server context with ``policy`` applied and no certificate yet.

    Contexts cannot be changed after their first connection (pyOpenSSL enforces this), so
    callers install the certificate before using it, or use :func:`certificate_context`.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(_VERSIONS[policy.min_version])
    context.set_options(_OPTIONS)
    context.set_cipher_list(TLS12_CIPHERS.encode("ascii"))
    context.set_tls13_ciphersuites(TLS13_CIPHERSUITES.encode("ascii"))
    if not _set_groups(context, supported_groups()):
        _lib.ERR_clear_error()
        raise TLSPolicyError("the linked OpenSSL refused the key-exchange groups")
    context.set_session_id(SESSION_ID_CONTEXT)
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_timeout(SESSION_TIMEOUT)
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if policy.alpn:
        install_alpn(context, policy.alpn)  # a C callback: no per-connection Python object
    return context


def served_chain(certificate: LoadedCertificate) -> tuple[x509.Certificate, ...]:
    """The intermediates sent after the leaf: ``chain`` without the leaf itself.

    ``LoadedCertificate.chain`` is leaf first; a chain given without its leaf works too.
    """
    leaf_der = certificate.leaf.public_bytes(Encoding.DER)
    return tuple(
        cert for cert in certificate.chain if cert.public_bytes(Encoding.DER) != leaf_der
    )


def certificate_context(
    certificate: LoadedCertificate, policy: TLSPolicy = INTERMEDIATE
) -> SSL.Context:
    """A policy context serving ``certificate``, its key and its intermediates.

    Raises ``SSL.Error`` if the key does not match the leaf. The error never carries the key.
    """
    context = policy_context(policy)
    context.use_certificate(certificate.leaf)
    context.use_privatekey(certificate.key)  # type: ignore[arg-type]
    context.check_privatekey()
    for intermediate in served_chain(certificate):
        context.add_extra_chain_cert(intermediate)
    return context


@implementer(IOpenSSLServerConnectionCreator)
class SingleCertificateCreator:
    """Serves one certificate on every connection, whatever the SNI (the admin listener).

    The context is built once, at construction, so a bad key fails at start-up, not at the
    first handshake.
    """

    def __init__(
        self, certificate: LoadedCertificate, policy: TLSPolicy = INTERMEDIATE
    ) -> None:
        self._context = certificate_context(certificate, policy)

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


def single_certificate_factory(
    certificate: LoadedCertificate,
    wrapped: IProtocolFactory,
    clock: IReactorTime,
    policy: TLSPolicy = INTERMEDIATE,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
) -> TimedTLSFactory:
    """``wrapped`` behind TLS with one certificate and a handshake deadline."""
    return TimedTLSFactory(
        SingleCertificateCreator(certificate, policy), wrapped, clock, handshake_timeout
    )

