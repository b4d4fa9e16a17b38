"""The fake Cloudflare's CA (:mod:`aegis.testing.cloudflare`): an in-memory stand-in for
Cloudflare's Origin root that signs Origin CA certificates. Kept apart so that tests which
only need certificates "from Cloudflare" can mint them without the fake API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["FakeOriginCA"]


class FakeOriginCA:
    """An in-memory CA standing in for Cloudflare's Origin root."""

    def __init__(self, now: datetime) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aegis Fake Cloudflare"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "Fake Cloudflare Origin CA")])
        self.certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, public_key: Any, hostnames: list[str], now: datetime, days: int) -> str:
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CloudFlare, Inc."),
                             x509.NameAttribute(NameOID.COMMON_NAME,
                                                "CloudFlare Origin Certificate")])
        cert = (
            x509.CertificateBuilder().subject_name(subject)
            .issuer_name(self.certificate.subject).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in hostnames]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
