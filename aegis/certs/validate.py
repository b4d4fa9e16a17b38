"""Validation of a certificate and its key before anything is stored (pure, no I/O).

:func:`validate_upload` is the custom-upload path (PEM text from the admin API);
:func:`validate_pair` is the shared core, also for chains a CA or Cloudflare returns for a
key we generated (a chain that does not match our key or names is refused, the old pair kept).
The result turns into store fields with :meth:`ValidatedCertificate.to_fields`, which seals
the key: the plaintext key never leaves this process unencrypted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from aegis import names
from aegis.certs import sources
from aegis.certs.chain import order_chain
from aegis.certs.errors import (
    DOMAINS_NOT_COVERED,
    EXPIRED,
    INVALID_FIELD,
    INVALID_HOSTNAME,
    INVALID_PEM,
    KEY_MISMATCH,
    NO_SAN,
    NOT_YET_VALID,
    CertificateError,
)
from aegis.certs.pem import certificates_pem, parse_certificates, parse_private_key
from aegis.crypto.keys import key_type_name, private_key_pem, public_keys_equal
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import certificate_key_context
from aegis.store.records import CertificateFields
from aegis.timefmt import to_text

MAX_DOMAINS = 100


@dataclass(frozen=True, eq=False)
class ValidatedCertificate:
    """A key pair that passed every check, with the public facts the API shows."""

    names: tuple[str, ...]
    chain: tuple[x509.Certificate, ...]
    key: CertificateIssuerPrivateKeyTypes = field(repr=False)
    chain_complete: bool
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    key_type: str

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def chain_pem(self) -> str:
        return certificates_pem(self.chain)

    def to_fields(
        self,
        wrapper: KeyWrapper,
        *,
        source: str | None = None,
        uid: str | None = None,
        auto_renew: bool = False,
        source_ref: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CertificateFields:
        """Store fields with the key sealed under this record's own context.

        A fresh ``uid`` (uuid4 hex) per call unless given: a replacement gets a new one, so
        an old ciphertext can never be mistaken for the new record's key. ``source``
        defaults to the registered upload source.
        """
        uid = uid or uuid.uuid4().hex
        return CertificateFields(
            uid=uid,
            source=source or sources.upload_source().name,
            domains=self.names,
            chain_pem=self.chain_pem,
            key_sealed=wrapper.seal(private_key_pem(self.key), certificate_key_context(uid)),
            issuer=self.issuer,
            subject=self.subject,
            not_before=self.not_before,
            not_after=self.not_after,
            fingerprint_sha256=self.fingerprint_sha256,
            key_type=self.key_type,
            chain_complete=self.chain_complete,
            auto_renew=auto_renew,
            source_ref=source_ref,
            extra=extra or {},
        )


def requested_domains(value: object, field_name: str = "domains") -> tuple[str, ...]:
    """Normalise the optional ``domains`` field: a list of hostname strings (wildcards ok)."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise CertificateError(
            INVALID_FIELD, f"{field_name} must be a list of hostnames", field_name
        )
    if len(value) > MAX_DOMAINS:
        raise CertificateError(
            INVALID_FIELD, f"{field_name} has more than {MAX_DOMAINS} names", field_name
        )
    try:
        return tuple(dict.fromkeys(names.normalise(v) for v in value))
    except names.InvalidHostname as exc:
        raise CertificateError(INVALID_HOSTNAME, str(exc), field_name) from None


def san_names(leaf: x509.Certificate, field_name: str = "cert_pem") -> tuple[str, ...]:
    """The leaf's DNS SANs, normalised and deduplicated; names that break our grammar are
    left out (they could never be selected). No usable SAN is an error: browsers ignore
    the CN, and so do we."""
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise CertificateError(
            NO_SAN,
            "the certificate has no Subject Alternative Name extension; hostnames are taken "
            "from SANs only (a Common Name alone is not accepted by browsers or by Aegis)",
            field_name,
        ) from None
    except ValueError:
        raise CertificateError(
            INVALID_PEM, "the certificate's extensions are malformed", field_name
        ) from None
    out: dict[str, None] = {}
    for raw in extension.value.get_values_for_type(x509.DNSName):
        try:
            out[names.normalise(raw)] = None
        except names.InvalidHostname:
            continue
    if not out:
        raise CertificateError(
            NO_SAN,
            "the certificate has no DNS name among its Subject Alternative Names",
            field_name,
        )
    return tuple(out)


def issuer_name(certificate: x509.Certificate) -> str:
    """The issuer's common name, or the whole issuer DN when it has none."""
    common = certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        value = common[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return certificate.issuer.rfc4514_string()


def validate_pair(
    certificates: Sequence[x509.Certificate],
    key: CertificateIssuerPrivateKeyTypes,
    *,
    now: datetime,
    domains: Sequence[str] = (),
    trust_roots: Sequence[x509.Certificate] = (),
    cert_field: str = "cert_pem",
    key_field: str = "key_pem",
) -> ValidatedCertificate:
    """Check a parsed bundle against its key, the wanted (normalised) ``domains`` and ``now``.

    @raise CertificateError: ``key_mismatch``, ``chain_unrelated``, ``no_san``,
        ``domains_not_covered``, ``expired`` or ``not_yet_valid``.
    """
    public = key.public_key()
    leaves = [cert for cert in certificates if _same_key(cert, public)]
    if not leaves:
        raise CertificateError(
            KEY_MISMATCH,
            f"the private key does not match the certificate in {cert_field}",
            key_field,
        )
    leaf = leaves[0]
    ordered = order_chain(leaf, certificates, trust_roots, cert_field)
    hostnames = san_names(leaf, cert_field)
    uncovered = [d for d in domains if not any(names.matches(p, d) for p in hostnames)]
    if uncovered:
        raise CertificateError(
            DOMAINS_NOT_COVERED,
            f"the certificate does not cover {', '.join(uncovered)} "
            f"(it covers {', '.join(hostnames)})",
            "domains",
        )
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < not_before:
        raise CertificateError(
            NOT_YET_VALID, f"the certificate is not valid before {to_text(not_before)}", cert_field
        )
    if now >= not_after:
        raise CertificateError(
            EXPIRED, f"the certificate expired at {to_text(not_after)}", cert_field
        )
    return ValidatedCertificate(
        names=hostnames,
        chain=ordered.certificates,
        key=key,
        chain_complete=ordered.complete,
        issuer=issuer_name(leaf),
        subject=leaf.subject.rfc4514_string(),
        not_before=not_before,
        not_after=not_after,
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        key_type=key_type_name(key),
    )


def _same_key(certificate: x509.Certificate, public: Any) -> bool:
    try:
        return public_keys_equal(certificate.public_key(), public)
    except Exception:
        # A certificate whose key we cannot even load cannot be ours.
        return False


def validate_upload(
    cert_pem: object,
    key_pem: object,
    *,
    now: datetime,
    domains: object = None,
    key_passphrase: object = None,
    trust_roots: Sequence[x509.Certificate] = (),
) -> ValidatedCertificate:
    """Everything the custom-upload endpoint checks, in the order a person fixes them:
    request shape, certificate PEM, key PEM, key match, chain, names, validity.

    CPU-bound (signature checks, an encrypted key's KDF): call it off the reactor thread.
    """
    wanted = requested_domains(domains)
    certificates = parse_certificates(cert_pem)
    key = parse_private_key(key_pem, key_passphrase)
    return validate_pair(certificates, key, now=now, domains=wanted, trust_roots=trust_roots)
