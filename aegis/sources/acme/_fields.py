"""Turn a verified ACME chain and its key into the store's ``CertificateFields``.

Kept small and local on purpose: the chain was already checked against our key and names by
:func:`aegis.sources.acme.issuer.verify_chain`, so only the facts the API shows are derived
here. (The general PEM validator for uploads lives in :mod:`aegis.certs`.)
"""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aegis.crypto.keys import key_type_name, private_key_pem
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import certificate_key_context
from aegis.store.records import CertificateFields

SOURCE = "letsencrypt"


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def letsencrypt_fields(
    chain_pem: bytes,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    wrapper: KeyWrapper,
    uid: str | None = None,
) -> CertificateFields:
    """Fields for a new (or replacing) certificate record; the key sealed for ``uid``."""
    uid = uid or uuid.uuid4().hex
    chain = x509.load_pem_x509_certificates(chain_pem)
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    last = chain[-1]
    return CertificateFields(
        uid=uid,
        source=SOURCE,
        domains=tuple(name.lower() for name in sans.get_values_for_type(x509.DNSName)),
        chain_pem=chain_pem.decode("ascii"),
        key_sealed=wrapper.seal(private_key_pem(key), certificate_key_context(uid)),
        issuer=_common_name(leaf.issuer),
        subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        key_type=key_type_name(key),
        # ACME chains end at an intermediate whose root the client trusts; complete means
        # every certificate is followed by its issuer, down to one we cannot go past.
        chain_complete=len(chain) > 1 or last.issuer == last.subject,
        auto_renew=True,
    )
