"""TLS-ALPN-01 (RFC 8737): the challenge answered on the HTTPS listener itself.

The CA connects to port 443 with SNI = the name and ALPN = exactly ``acme-tls/1``; the
server must negotiate ``acme-tls/1`` and present a self-signed certificate for the name
whose critical ``id-pe-acmeIdentifier`` extension (1.3.6.1.5.5.7.1.31) holds the SHA-256
of the key authorisation as a DER OCTET STRING. Used when port 80 is closed or blocked
(``AEGIS_ACME_CHALLENGE``, see docs/acme.md).

:class:`TlsAlpnResponder` makes that certificate when the issuer publishes an answer (off
the handshake path: key generation and signing happen here), converts it once into the
OpenSSL objects the handshake needs, and hands the TLS layer a dict lookup
(:func:`aegis.tls.socket_tls.add_acme_tls_lookup`). A normal client never sees it: the TLS
layer only asks for ClientHellos offering ``acme-tls/1`` alone. Answers live in memory; a
restart mid-order publishes again when the order is resumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import crypto

from aegis.tls.socket_tls import add_acme_tls_lookup

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
CHALLENGE_LIFETIME = timedelta(days=7)


def acme_identifier_value(key_authorization: str) -> bytes:
    """The extension's DER value: an OCTET STRING of SHA-256(key authorisation)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return b"\x04\x20" + digest


def sni_for(name: str) -> str:
    """The SNI the CA sends for an identifier: the name itself, or for an IP address its
    reverse-DNS name (RFC 8738 §6: ``4.3.2.1.in-addr.arpa``)."""
    try:
        address = ip_address(name)
    except ValueError:
        return name.lower()
    return address.reverse_pointer


def challenge_certificate(
    name: str, key_authorization: str, now: datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed challenge certificate for ``name`` (a DNS name or an IP address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    moment = now or datetime.now(UTC)
    try:
        san: x509.GeneralName = x509.IPAddress(ip_address(name))
    except ValueError:
        san = x509.DNSName(name.lower())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME TLS-ALPN-01 challenge")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(days=1))
        .not_valid_after(moment + CHALLENGE_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.UnrecognizedExtension(
            ACME_IDENTIFIER, acme_identifier_value(key_authorization)), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


class TlsAlpnResponder:
    """The TLS-ALPN-01 answers in flight, by SNI; :meth:`lookup` runs in the handshake.

    ``install`` (default: the TLS layer's registry) is called once, at construction."""

    def __init__(self, install: Callable[[Any], Callable[[], None]] = add_acme_tls_lookup,
                 ) -> None:
        # SNI bytes -> (pyOpenSSL certificate, key, their raw pointers): the objects keep
        # the pointers alive while published.
        self._answers: dict[bytes, tuple[crypto.X509, crypto.PKey, tuple[Any, Any]]] = {}
        self._remove = install(self.lookup)

    def publish(self, name: str, key_authorization: str) -> None:
        certificate, key = challenge_certificate(name, key_authorization)
        x509_object = crypto.X509.from_cryptography(certificate)
        key_object = crypto.PKey.from_cryptography_key(key)
        self._answers[sni_for(name).encode("ascii")] = (
            x509_object, key_object, (x509_object._x509, key_object._pkey))

    def withdraw(self, name: str) -> None:
        self._answers.pop(sni_for(name).encode("ascii"), None)

    def withdraw_names(self, names: Any) -> None:
        for name in names:
            self.withdraw(name)

    def published(self) -> list[str]:
        return sorted(raw.decode("ascii") for raw in self._answers)

    def lookup(self, raw_sni: bytes | None) -> tuple[Any, Any] | None:
        """Memory only: the handshake path. SNI compared case-insensitively."""
        if raw_sni is None:
            return None
        found = self._answers.get(raw_sni.lower())
        return None if found is None else found[2]

    def close(self) -> None:
        """Stop answering (the TLS layer forgets this responder)."""
        self._remove()
        self._answers.clear()


__all__ = ["ACME_IDENTIFIER", "TlsAlpnResponder", "acme_identifier_value",
           "challenge_certificate", "sni_for"]
