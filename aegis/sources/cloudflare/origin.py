"""Cloudflare Origin CA: key and CSR made here, certificate checked, then stored.

Why the checks: Cloudflare signs whatever ``hostnames`` the request names, and a bug, a proxy
or a compromised account could hand back a certificate for other names or another key. A
certificate is stored only if its public key is ours and its SAN DNS names are exactly the
names we asked for (ACCEPTANCE 32); otherwise nothing is stored and the admin sees why.

The private key never leaves this process unsealed: ``ValidatedCertificate.to_fields`` seals
it with the master key under ``certificate:<uid>:key`` before the store sees it. Origin CA
certificates chain to Cloudflare's Origin root, which browsers do not trust and Aegis does
not ship, so ``chain_complete`` is false: they are meant for Cloudflare's edge only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aegis import names
from aegis.certs.errors import CertificateError
from aegis.certs.validate import ValidatedCertificate, validate_pair
from aegis.crypto.keys import KeyKind, build_csr, generate_private_key, public_keys_equal
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore, IStoreTransaction
from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError
from aegis.sources.cloudflare.orders import ORIGIN_REQUEST_TYPES, OriginOrder
from aegis.sources.cloudflare.timefmt import format_rfc3339, parse_expires_on
from aegis.store.records import CertificateRecord

log = Logger(namespace="aegis.sources.cloudflare")
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


def verify_certificate(
    pem: object, key: CertificateIssuerPrivateKeyTypes, wanted: Sequence[str], now: datetime
) -> ValidatedCertificate:
    """The checked pair if Cloudflare's PEM is for ``key`` and exactly ``wanted``.

    Exactness matters: a certificate for *more* names than asked is as wrong as one for
    fewer (it proves the answer was not for our request). The remaining checks (validity
    window, chain order, derived facts) are the shared ones of
    :func:`aegis.certs.validate.validate_pair`.

    @raise CertificateMismatch: saying which check failed (never quoting key material).
    """
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise CertificateMismatch("Cloudflare's answer holds no PEM certificate")
    try:
        chain = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeError):
        raise CertificateMismatch("Cloudflare's certificate is not valid PEM") from None
    if not public_keys_equal(chain[0].public_key(), key.public_key()):
        raise CertificateMismatch(
            "Cloudflare returned a certificate for another key; nothing was stored")
    got, asked = _san_names(chain[0]), set(wanted)
    if got != asked:
        extra, missing = sorted(got - asked)[:5], sorted(asked - got)[:5]
        raise CertificateMismatch(
            "Cloudflare returned a certificate for other names "
            f"(unexpected: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})"
            "; nothing was stored")
    try:
        return validate_pair(chain, key, now=now, domains=wanted, cert_field="certificate")
    except CertificateError as exc:
        raise CertificateMismatch(
            f"Cloudflare's certificate was refused: {exc.message}; nothing was stored"
        ) from None


class OriginCertificates:
    """Requests Origin CA certificates and stores them; ``on_stored`` tells the registry.

    Concurrency: independent requests may run at once; each stores a new record in its own
    transaction. Failure at any step stores nothing.
    """

    def __init__(
        self,
        client: CloudflareClient,
        store: IStore,
        wrapper: KeyWrapper,
        clock: IReactorTime,
        on_stored: Callable[[CertificateRecord], object] | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._wrapper = wrapper
        self._clock = clock
        self._on_stored = on_stored

    def request(self, order: OriginOrder) -> Deferred[dict[str, Any]]:
        """Fires with the admin API's response body; fails with :class:`CloudflareError`
        or :class:`CertificateMismatch` (or a store error) and then nothing is stored."""
        return Deferred.fromCoroutine(self._request(order))

    async def _request(self, order: OriginOrder) -> dict[str, Any]:
        kind: KeyKind = ORIGIN_REQUEST_TYPES[order.request_type]  # type: ignore[assignment]
        key = generate_private_key(kind)
        csr = build_csr(key, order.hostnames).decode("ascii")
        result = await self._client.create_origin_certificate(order.credentials, {
            "csr": csr,
            "hostnames": list(order.hostnames),
            "request_type": order.request_type,
            "requested_validity": order.requested_validity,
        })
        if not isinstance(result, dict) or not isinstance(result.get("id"), str | int):
            raise CloudflareError("bad_response", "Cloudflare's answer has no certificate id")
        cloudflare_id = str(result["id"])
        now = datetime.fromtimestamp(self._clock.seconds(), UTC)
        checked = verify_certificate(result.get("certificate"), key, order.hostnames, now)
        try:
            expires = parse_expires_on(result.get("expires_on"))
        except ValueError:
            log.warn("Cloudflare certificate {cloudflare_id}: unreadable expires_on; using the "
                     "certificate's notAfter", cloudflare_id=cloudflare_id)
            expires = checked.not_after
        fields = checked.to_fields(
            self._wrapper, source=SOURCE, source_ref=cloudflare_id,
            extra={"requested_zone": order.zone_id},
        )

        def add(txn: IStoreTransaction) -> CertificateRecord:
            return txn.add_certificate(fields)

        record = await self._store.transact(add)
        log.info(
            "Stored Cloudflare Origin CA certificate {id} (cloudflare id {cloudflare_id}) for "
            "{names}", id=record.id, cloudflare_id=cloudflare_id, names=list(order.hostnames),
            event="cert_obtained", source=SOURCE,
        )
        if self._on_stored is not None:
            try:
                self._on_stored(record)
            except Exception:
                log.failure("Refreshing certificates after storing {id} failed", id=record.id)
        return {
            "status": "created",
            "id": record.id,
            "cloudflare_id": cloudflare_id,
            "expires_on": format_rfc3339(expires),
            "requested_zone": order.zone_id,
        }
