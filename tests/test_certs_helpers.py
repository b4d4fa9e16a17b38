"""Builders for certificate tests: trustme for ordinary CAs and leaves, cryptography for the
odd cases (no SAN, expired, Ed25519, encrypted keys). Checked by a few tests of their own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Pair:
    """PEM texts as an uploader sends them: leaf (+ intermediates) and its key."""

    cert_pem: str
    key_pem: str
    chain: tuple[str, ...]  # single-certificate PEMs, leaf first

    @classmethod
    def from_trustme(cls, leaf: trustme.LeafCert) -> Pair:
        chain = tuple(blob.bytes().decode() for blob in leaf.cert_chain_pems)
        return cls("".join(chain), leaf.private_key_pem.bytes().decode(), chain)


def trustme_pair(ca: trustme.CA, *names: str, rsa_key: bool = False) -> Pair:
    key_type = trustme.KeyType.RSA if rsa_key else trustme.KeyType.ECDSA
    return Pair.from_trustme(ca.issue_cert(*names, key_type=key_type))


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(
    key: CertificateIssuerPrivateKeyTypes, passphrase: bytes | None = None, legacy: bool = False
) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if legacy
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


def ca_key_and_cert(
    name: str = "Odd Test CA",
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def build_leaf(
    key: CertificateIssuerPrivateKeyTypes,
    names: Sequence[str] = ("app.example.com",),
    *,
    issuer: tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    san: bool = True,
    common_name: str | None = None,
) -> x509.Certificate:
    """A leaf for ``key``; self-signed unless ``issuer`` (key, cert) is given."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name or (names[0] if names else "x"))]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(days=1))
        .not_valid_after(not_after or NOW + timedelta(days=90))
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signer = issuer[0] if issuer else key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(signer, algorithm)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def test_trustme_chain_is_leaf_then_intermediates_without_root() -> None:
    root = trustme.CA()
    pair = trustme_pair(root.create_child_ca(), "a.example.com")
    certs = [x509.load_pem_x509_certificate(c.encode()) for c in pair.chain]
    assert len(certs) == 2
    assert certs[0].issuer == certs[1].subject
    assert certs[1].issuer == x509.load_pem_x509_certificate(root.cert_pem.bytes()).subject


def test_build_leaf_without_san_has_only_a_common_name() -> None:
    cert = build_leaf(ec.generate_private_key(ec.SECP256R1()), san=False)
    assert not [e for e in cert.extensions if isinstance(e.value, x509.SubjectAlternativeName)]
