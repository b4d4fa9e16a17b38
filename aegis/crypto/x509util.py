"""Building and checking the certificates Aegis signs itself (the local CA and its leaves).

Pure functions over ``cryptography`` objects: no files, no clock of their own (``now`` is
always passed in), so the local CA's renewal rules can be tested by moving a clock.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aegis.crypto.keys import public_keys_equal

#: Leaves start this long before "now", so a client whose clock is a little behind accepts them.
BACKDATE = timedelta(hours=1)


def _serial() -> int:
    # 159 random bits: positive, below the 20-octet limit, unpredictable (CA/B BR 7.1).
    return int.from_bytes(os.urandom(20), "big") >> 1


def san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    """DNS names as ``DNSName``, IP literals (v4/v6) as ``IPAddress``; duplicates dropped."""
    seen: set[str] = set()
    entries: list[x509.GeneralName] = []
    for name in names:
        key = name.lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(key))
    return entries


def san_names(cert: x509.Certificate) -> frozenset[str]:
    """Every SAN of ``cert`` as text (DNS names lower-cased, IPs in canonical form)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    dns = {name.lower() for name in ext.get_values_for_type(x509.DNSName)}
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return frozenset(dns | ips)


def wanted_san_names(names: Iterable[str]) -> frozenset[str]:
    """The set :func:`san_names` returns for a certificate built from ``names``."""
    return frozenset(str(entry.value) for entry in san_entries(names))


def build_ca(
    key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime, days: int
) -> x509.Certificate:
    """A self-signed root: CA:TRUE pathlen 0 and keyCertSign+cRLSign, both critical, with SKI.

    pathlen 0 means this CA can sign leaves but no intermediate: if its key leaks, the
    damage is bounded to certificates it signs directly (and it is trusted only locally).
    """
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aegis"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def build_leaf(
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    leaf_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: Sequence[str],
    now: datetime,
    days: int,
) -> x509.Certificate:
    """A TLS server certificate for ``names`` signed by the CA.

    Carries what current clients insist on: SANs (CN is ignored for matching), serverAuth
    EKU, digitalSignature key usage, CA:FALSE, and an AKI naming the CA's key so chain
    building picks the right issuer when the CA was regenerated under the same name.
    """
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Aegis"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
    )
    return builder.sign(ca_key, hashes.SHA256())


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer``'s key made ``cert``'s signature (and the names chain).

    Checking the signature, not only the issuer name, is what catches a leaf left over from
    a CA that was deleted and regenerated under the same name.
    """
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True if ``key`` is the private half of ``cert``'s public key."""
    return public_keys_equal(cert.public_key(), key.public_key())


def valid_at(cert: x509.Certificate, moment: datetime) -> bool:
    return cert.not_valid_before_utc <= moment < cert.not_valid_after_utc
