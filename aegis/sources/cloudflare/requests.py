"""``POST /api/v1/certificates/cloudflare-origin``: key and CSR made here, signed by
Cloudflare through :class:`OriginIssuer`, checked, then stored.

The private key never leaves this process unsealed: ``ValidatedCertificate.to_fields`` seals
it with the master key under ``certificate:<uid>:key`` before the store sees it. Origin CA
certificates chain to Cloudflare's Origin root, which browsers do not trust and Aegis does
not ship, so ``chain_complete`` is false: they are meant for Cloudflare's edge only.

With ``auto_renew`` the request's credential is stored with the certificate, sealed for its
uid (:mod:`.renewal`), and the certificate records which issuer made it, so the lifecycle
engine adopts it with the right identity and renews it at the lifetime rule.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aegis.certs.lifecycle.transitions import ISSUED_BY
from aegis.crypto.keys import KeyKind, build_csr, generate_private_key
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import SEALED_CREDENTIALS
from aegis.events import CERT_OBTAINED, EventPublisher
from aegis.interfaces import IStore, IStoreTransaction
from aegis.sources.cloudflare.client import CloudflareClient
from aegis.sources.cloudflare.issuer import OriginIssuer
from aegis.sources.cloudflare.orders import ORIGIN_REQUEST_TYPES, OriginOrder
from aegis.sources.cloudflare.origin import SOURCE, verify_certificate
from aegis.sources.cloudflare.renewal import REQUESTED_VALIDITY, demand_key
from aegis.sources.cloudflare.timefmt import format_rfc3339
from aegis.store.records import CertificateRecord

log = Logger(namespace="aegis.sources.cloudflare")


class OriginCertificates:
    """Requests Origin CA certificates and stores them; ``on_stored`` tells the registry.

    ``issuer`` (default: one over ``client``) is the same code the lifecycle engine renews
    with; ``events`` (the lifecycle's publisher) gets ``cert_obtained`` for each stored
    certificate, as for every source. Concurrency: independent requests may run at once;
    each stores a new record in its own transaction. Failure at any step stores nothing.
    """

    def __init__(
        self,
        client: CloudflareClient,
        store: IStore,
        wrapper: KeyWrapper,
        clock: IReactorTime,
        on_stored: Callable[[CertificateRecord], object] | None = None,
        issuer: OriginIssuer | None = None,
        events: EventPublisher | None = None,
    ) -> None:
        self._events = events
        self._store = store
        self._wrapper = wrapper
        self._clock = clock
        self._on_stored = on_stored
        self.issuer = issuer or OriginIssuer(client, clock, store=store, wrapper=wrapper)

    def request(self, order: OriginOrder) -> Deferred[dict[str, Any]]:
        """Fires with the admin API's response body; fails with ``CloudflareError`` or
        ``CertificateMismatch`` (or a store error) and then nothing is stored."""
        return Deferred.fromCoroutine(self._request(order))

    async def _request(self, order: OriginOrder) -> dict[str, Any]:
        kind: KeyKind = ORIGIN_REQUEST_TYPES[order.request_type]  # type: ignore[assignment]
        key = generate_private_key(kind)
        answer = await self.issuer.submit(
            order.credentials, build_csr(key, order.hostnames), order.hostnames,
            order.request_type, order.requested_validity)
        checked = verify_certificate(answer.chain_pem.decode("ascii"), key, order.hostnames,
                                     self.issuer.now())
        uid = uuid.uuid4().hex
        extra: dict[str, Any] = {"requested_zone": order.zone_id,
                                 REQUESTED_VALIDITY: order.requested_validity,
                                 ISSUED_BY: self.issuer.identity}
        if order.auto_renew:
            extra[SEALED_CREDENTIALS] = order.credentials.seal(self._wrapper, uid)
        fields = checked.to_fields(
            self._wrapper, source=SOURCE, uid=uid, source_ref=answer.cloudflare_id,
            auto_renew=order.auto_renew, extra=extra,
        )

        def add(txn: IStoreTransaction) -> CertificateRecord:
            return txn.add_certificate(fields)

        record = await self._store.transact(add)
        facts = {"name": demand_key(record), "source": SOURCE, "certificate_id": record.id,
                 "names": list(order.hostnames), "issuer": self.issuer.identity,
                 "cloudflare_id": answer.cloudflare_id, "not_after": record.not_after,
                 "auto_renew": order.auto_renew}
        if self._events is not None:
            self._events.publish(CERT_OBTAINED, **facts)
        else:
            log.info("Stored Cloudflare Origin CA certificate {certificate_id} for {names}",
                     **facts)
        if self._on_stored is not None:
            try:
                self._on_stored(record)
            except Exception:
                log.failure("Refreshing certificates after storing {id} failed", id=record.id)
        return {
            "status": "created",
            "id": record.id,
            "cloudflare_id": answer.cloudflare_id,
            "expires_on": format_rfc3339(answer.expires_on),
            "requested_zone": order.zone_id,
            "auto_renew": order.auto_renew,
        }


__all__ = ["OriginCertificates"]
