"""Private keys and CSRs that Aegis generates (ACME, Cloudflare Origin CA, local CA).

One place decides key types and their names in the API, so every source produces the same
kinds: ECDSA P-256 (the default: small and fast handshakes) and RSA 2048 (compatibility).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

KeyKind = Literal["ecdsa-p256", "rsa-2048"]


def generate_private_key(kind: KeyKind = "ecdsa-p256") -> ec.EllipticCurvePrivateKey | (
    rsa.RSAPrivateKey
):
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key kind {kind!r}")


def key_type_name(key: PrivateKeyTypes | PublicKeyTypes) -> str:
    """The ``key_type`` shown in the API: ``ecdsa-p256``, ``rsa-2048``, ``ed25519`` ..."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}
        return f"ecdsa-{curve.get(key.curve.name, key.curve.name)}"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    return type(key).__name__.lower()


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM: only ever handed to the key wrapper or a 0600 file."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(data, password=None)


def build_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, names: Sequence[str]) -> bytes:
    """A PEM CSR for ``names`` (first one as CN when it fits the 64-character limit)."""
    subject = []
    if names and len(names[0]) <= 64:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, names[0]))
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False
        )
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def public_keys_equal(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    """Compare public keys by their SubjectPublicKeyInfo bytes."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return a.public_bytes(der, spki) == b.public_bytes(der, spki)
