"""ACME Renewal Information (ARI, RFC 9773): the CA's suggested renewal window.

A CA that lists ``renewalInfo`` in its directory answers ``GET <renewalInfo>/<certID>`` with
``{"suggestedWindow": {"start": ..., "end": ...}, "explanationURL": ...}`` and a
``Retry-After`` saying when to ask again. The CA moves the window earlier when it must
revoke (a mis-issuance, a key compromise) and spreads renewals out otherwise; Let's Encrypt
exempts renewals made inside the window with ``replaces`` from its rate limits.

The certificate identifier (RFC 9773 §4.1) is ``base64url(AKI keyIdentifier) "."
base64url(serial)``, unpadded, the serial as the DER INTEGER's content octets (so a serial
whose first bit is set keeps its leading zero byte).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from josepy.b64 import b64encode

from aegis.certs.lifecycle.policy import RenewalAdvice

#: RFC 9773 §4.3.2: clients should not check more often than this, even if asked...
MIN_CHECK_INTERVAL = timedelta(minutes=1)
#: ...and at least daily, so a window moved for a revocation is seen within a day.
MAX_CHECK_INTERVAL = timedelta(days=1)
#: Without a Retry-After: Let's Encrypt's own advice (six hours).
DEFAULT_CHECK_INTERVAL = timedelta(hours=6)


class RenewalInfoError(ValueError):
    """The certificate has no ARI identifier, or the CA's answer is not a valid window."""


def _b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def serial_octets(serial: int) -> bytes:
    """The content octets of the DER INTEGER ``serial`` (positive: a leading 0x00 when the
    top bit of the first byte would otherwise be set)."""
    length = serial.bit_length() // 8 + 1  # one spare bit for the sign
    return serial.to_bytes(length, "big")


def certificate_id(aki_key_identifier: bytes, serial: int) -> str:
    """The ARI certificate identifier from its AKI keyIdentifier and serial number."""
    return f"{_b64(aki_key_identifier)}.{_b64(serial_octets(serial))}"


def certificate_id_of(certificate: x509.Certificate) -> str:
    """The ARI identifier of ``certificate`` (raises :class:`RenewalInfoError` if its AKI
    has no keyIdentifier: then there is no ARI for it)."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise RenewalInfoError("the certificate has no authority key identifier") from None
    if aki.key_identifier is None:
        raise RenewalInfoError("the certificate's AKI has no keyIdentifier")
    return certificate_id(aki.key_identifier, certificate.serial_number)


def certificate_id_of_pem(chain_pem: str | bytes) -> str:
    """The ARI identifier of the leaf of a PEM chain."""
    data = chain_pem.encode() if isinstance(chain_pem, str) else chain_pem
    try:
        leaf = x509.load_pem_x509_certificates(data)[0]
    except (ValueError, IndexError):
        raise RenewalInfoError("the certificate chain does not parse") from None
    return certificate_id_of(leaf)


def _timestamp(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise RenewalInfoError(f"suggestedWindow.{field} is not an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RenewalInfoError(f"suggestedWindow.{field} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise RenewalInfoError(f"suggestedWindow.{field} has no time zone")
    return moment.astimezone(UTC)


def next_check(now: datetime, retry_after: float | None) -> datetime:
    """When to ask again: the CA's Retry-After, kept between a minute and a day."""
    if retry_after is None:
        return now + DEFAULT_CHECK_INTERVAL
    wait = timedelta(seconds=retry_after)
    return now + min(MAX_CHECK_INTERVAL, max(MIN_CHECK_INTERVAL, wait))


def parse_renewal_info(document: Any, now: datetime, retry_after: float | None) -> RenewalAdvice:
    """Validate a renewalInfo answer (RFC 9773 §4.2): ``start`` must not be after ``end``."""
    if not isinstance(document, dict) or not isinstance(document.get("suggestedWindow"), dict):
        raise RenewalInfoError("the renewalInfo answer has no suggestedWindow")
    window = document["suggestedWindow"]
    start, end = _timestamp(window.get("start"), "start"), _timestamp(window.get("end"), "end")
    if end < start:
        raise RenewalInfoError("the suggested renewal window ends before it starts")
    explanation = document.get("explanationURL")
    return RenewalAdvice(
        (start, end), next_check(now, retry_after),
        explanation if isinstance(explanation, str) else None,
    )


__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "MAX_CHECK_INTERVAL",
    "MIN_CHECK_INTERVAL",
    "RenewalAdvice",
    "RenewalInfoError",
    "certificate_id",
    "certificate_id_of",
    "certificate_id_of_pem",
    "next_check",
    "parse_renewal_info",
    "serial_octets",
]
