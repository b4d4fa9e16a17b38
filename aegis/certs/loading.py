"""Turning one stored certificate record into a :class:`LoadedCertificate` in memory.

This is the only place a stored private key is decrypted. A record that cannot be loaded
(GCM tag failure after a wrong master key or a corrupted row, an unparsable chain, a key that
no longer matches its leaf) raises :class:`UnusableCertificate` with a short reason that names
no secret; the registry flags that record and loads the others.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from aegis.certs.model import LoadedCertificate
from aegis.crypto.keywrap import KeyWrapper, UnwrapError
from aegis.crypto.sealed import certificate_key_context
from aegis.store.records import CertificateRecord

# Stable reason codes shown by the registry's status lookup and the API.
KEY_UNREADABLE = "key_unreadable"
KEY_INVALID = "key_invalid"
CHAIN_INVALID = "chain_invalid"
KEY_MISMATCH = "key_mismatch"


class UnusableCertificate(Exception):
    """A stored record cannot serve. ``reason`` is a stable code, ``str()`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_record(record: CertificateRecord, wrapper: KeyWrapper) -> LoadedCertificate:
    """Decrypt and parse ``record``. Pure CPU work: safe on any thread.

    @raise UnusableCertificate: the record cannot serve; nothing about the key is revealed.
    """
    try:
        key_pem = wrapper.open(record.key_sealed, certificate_key_context(record.uid))
    except UnwrapError:
        raise UnusableCertificate(
            KEY_UNREADABLE,
            "the private key failed to decrypt (wrong master key or corrupted data)",
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise UnusableCertificate(KEY_INVALID, "the decrypted private key is unreadable") from None
    finally:
        del key_pem
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise UnusableCertificate(KEY_INVALID, "the private key type cannot serve TLS")
    try:
        chain = tuple(x509.load_pem_x509_certificates(record.chain_pem.encode("ascii")))
    except (ValueError, UnicodeError):
        raise UnusableCertificate(CHAIN_INVALID, "the stored chain does not parse") from None
    leaf = chain[0]
    # Public key objects compare by value; several times cheaper than comparing their DER.
    if leaf.public_key() != key.public_key():
        raise UnusableCertificate(KEY_MISMATCH, "the private key does not match the leaf")
    return LoadedCertificate(
        id=record.id,
        source=record.source,
        names=tuple(record.domains),
        leaf=leaf,
        chain=chain,
        key=key,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )
