"""Cloudflare Origin CA: the source's name and the checks every answer must pass.

Why the checks: Cloudflare signs whatever ``hostnames`` the request names, and a bug, a proxy
or a compromised account could hand back a certificate for other names or another key. A
certificate is stored only if its public key is ours and its SAN DNS names are exactly the
names we asked for, and it is valid now (docs/security.md, line 32); otherwise nothing is stored and
the admin (or the lifecycle engine, for a renewal) sees why. Both ways a certificate is
made run them: :mod:`.issuer` for the request and the renewal, :mod:`.requests` for what
the admin request stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from aegis import names
from aegis.certs.errors import CertificateError
from aegis.certs.validate import ValidatedCertificate, validate_pair
from aegis.crypto.keys import public_keys_equal
from aegis.sources.cloudflare.timefmt import format_rfc3339

SOURCE = "cloudflare_origin"


class CertificateMismatch(Exception):
    """Cloudflare's certificate is not for our key or not for exactly our names (502)."""

    admin_status = 502

    def as_json(self) -> dict[str, Any]:
        return {"error": "cloudflare_certificate_mismatch", "message": str(self)}


def _san_names(leaf: x509.Certificate) -> set[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        raise CertificateMismatch("Cloudflare's certificate has no subjectAltName") from None
    found = set()
    for raw in san.get_values_for_type(x509.DNSName):
        try:
            found.add(names.normalise(raw))
        except names.InvalidHostname:
            raise CertificateMismatch("Cloudflare's certificate names an invalid host") from None
    return found


def check_answer(
    pem: object, public_key: Any, wanted: Sequence[str], now: datetime
) -> list[x509.Certificate]:
    """The parsed chain if Cloudflare's PEM is for ``public_key`` and exactly ``wanted``,
    and valid at ``now``: the checks both the admin request and a renewal make.

    Exactness matters: a certificate for *more* names than asked is as wrong as one for
    fewer (it proves the answer was not for our request).

    @raise CertificateMismatch: saying which check failed (never quoting key material).
    """
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise CertificateMismatch("Cloudflare's answer holds no PEM certificate")
    try:
        chain = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeError):
        raise CertificateMismatch("Cloudflare's certificate is not valid PEM") from None
    if not public_keys_equal(chain[0].public_key(), public_key):
        raise CertificateMismatch(
            "Cloudflare returned a certificate for another key; nothing was stored")
    got, asked = _san_names(chain[0]), set(wanted)
    if got != asked:
        extra, missing = sorted(got - asked)[:5], sorted(asked - got)[:5]
        raise CertificateMismatch(
            "Cloudflare returned a certificate for other names "
            f"(unexpected: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})"
            "; nothing was stored")
    leaf = chain[0]
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise CertificateMismatch(
            "Cloudflare's certificate is not valid now "
            f"({format_rfc3339(leaf.not_valid_before_utc)} to "
            f"{format_rfc3339(leaf.not_valid_after_utc)}); nothing was stored")
    return chain


def verify_certificate(
    pem: object, key: CertificateIssuerPrivateKeyTypes, wanted: Sequence[str], now: datetime
) -> ValidatedCertificate:
    """The checked pair if Cloudflare's PEM is for ``key`` and exactly ``wanted``
    (:func:`check_answer`), plus the shared checks of
    :func:`aegis.certs.validate.validate_pair` (chain order, derived facts).

    @raise CertificateMismatch: saying which check failed (never quoting key material).
    """
    chain = check_answer(pem, key.public_key(), wanted, now)
    try:
        return validate_pair(chain, key, now=now, domains=wanted, cert_field="certificate")
    except CertificateError as exc:
        raise CertificateMismatch(
            f"Cloudflare's certificate was refused: {exc.message}; nothing was stored"
        ) from None
