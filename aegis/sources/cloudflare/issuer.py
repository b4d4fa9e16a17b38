"""``OriginIssuer``: Cloudflare's Origin CA behind :class:`ICertificateIssuer`.

One code path for both ways an Origin CA certificate is made:

* the admin request (``POST /api/v1/certificates/cloudflare-origin``) calls :meth:`submit`
  with the credential of the request (:class:`aegis.sources.cloudflare.OriginCertificates`);
* the lifecycle engine renews a certificate marked for automatic renewal through
  :meth:`issue`, which opens the credential sealed with that certificate
  (:mod:`.renewal`) and then calls :meth:`submit` too.

:meth:`submit` sends the CSR (never a key), and checks Cloudflare's answer before anyone
may store it (docs/security.md, line 32): the leaf must carry the CSR's public key, exactly
the asked names, and be valid now (:func:`aegis.sources.cloudflare.origin.check_answer`).

Cloudflare signs in one request, so there is no order in flight to abandon, and it suggests
no renewal window: the lifetime rule applies. A ``Retry-After`` beyond the client's own
retries becomes ``retry_at`` on the error, which the engine honours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aegis.certs.lifecycle.transitions import IssuedChain
from aegis.crypto.keys import KeyKind, key_type_name
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import ICertificateIssuer, IStore
from aegis.sources.cloudflare import renewal
from aegis.sources.cloudflare.client import CloudflareClient
from aegis.sources.cloudflare.errors import CloudflareError, Credentials
from aegis.sources.cloudflare.origin import SOURCE, CertificateMismatch, check_answer
from aegis.sources.cloudflare.timefmt import parse_expires_on

log = Logger(namespace="aegis.sources.cloudflare")


@dataclass(frozen=True)
class OriginAnswer:
    """Cloudflare's checked answer: its certificate id, the chain (leaf first), expiry."""

    cloudflare_id: str
    chain: tuple[x509.Certificate, ...]
    expires_on: datetime

    @property
    def chain_pem(self) -> bytes:
        return b"".join(cert.public_bytes(Encoding.PEM) for cert in self.chain)


@implementer(ICertificateIssuer)
class OriginIssuer:
    """Origin CA certificates for any names, through one :class:`CloudflareClient`.

    ``identity`` names the API base URL: pointing ``AEGIS_CLOUDFLARE_API_BASE`` elsewhere
    makes the engine renew every automatically renewed Origin certificate at once.
    ``credentials`` is used by :meth:`issue` for requests that name no stored certificate
    (tools, the contract tests); the engine's renewals always name one.

    Concurrency: independent calls may run at once; nothing is kept between them.
    """

    source = SOURCE

    def __init__(
        self,
        client: CloudflareClient,
        clock: IReactorTime,
        *,
        store: IStore | None = None,
        wrapper: KeyWrapper | None = None,
        credentials: Credentials | None = None,
        key_kind: KeyKind = "rsa-2048",
    ) -> None:
        self.identity = f"cloudflare-origin {client.base_url}"
        self.key_kind = key_kind
        self._client = client
        self._clock = clock
        self._store = store
        self._wrapper = wrapper
        self._credentials = credentials

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def submit(
        self, credentials: Credentials, csr_pem: bytes, names: Sequence[str],
        request_type: str, requested_validity: int,
    ) -> Deferred[OriginAnswer]:
        """Ask Cloudflare to sign ``csr_pem`` for ``names``; fires with the checked answer.

        @raise CloudflareError: Cloudflare refused, failed or did not answer (with
            ``retry_at`` when it asked us to wait).
        @raise CertificateMismatch: the answer is not for our key and exactly ``names``.
        """
        return Deferred.fromCoroutine(
            self._submit(credentials, csr_pem, tuple(names), request_type, requested_validity))

    async def _submit(
        self, credentials: Credentials, csr_pem: bytes, names: tuple[str, ...],
        request_type: str, requested_validity: int,
    ) -> OriginAnswer:
        public_key = x509.load_pem_x509_csr(csr_pem).public_key()
        try:
            result = await self._client.create_origin_certificate(credentials, {
                "csr": csr_pem.decode("ascii"),
                "hostnames": list(names),
                "request_type": request_type,
                "requested_validity": requested_validity,
            })
        except CloudflareError as error:
            if error.retry_after is not None:
                error.retry_at = self._clock.seconds() + error.retry_after
            raise
        if not isinstance(result, dict) or not isinstance(result.get("id"), str | int):
            raise CloudflareError("bad_response", "Cloudflare's answer has no certificate id")
        cloudflare_id = str(result["id"])
        chain = check_answer(result.get("certificate"), public_key, names, self.now())
        try:
            expires = parse_expires_on(result.get("expires_on"))
        except ValueError:
            log.warn("Cloudflare certificate {cloudflare_id}: unreadable expires_on; using the "
                     "certificate's notAfter", cloudflare_id=cloudflare_id)
            expires = chain[0].not_valid_after_utc
        return OriginAnswer(cloudflare_id, tuple(chain), expires)

    def issue(
        self, csr_pem: bytes, names: Sequence[str], options: Mapping[str, Any] | None = None,
    ) -> Deferred[Any]:
        """The engine's call: ``options`` from :func:`.renewal.renewal_options` name the
        certificate whose sealed credential, request type and validity to use."""
        return Deferred.fromCoroutine(self._issue(csr_pem, tuple(names), dict(options or {})))

    async def _issue(
        self, csr_pem: bytes, names: tuple[str, ...], options: dict[str, Any],
    ) -> IssuedChain:
        credentials = await self._credentials_for(options.get("certificate_id"))
        request_type = options.get("request_type")
        if request_type is None:
            kind = key_type_name(x509.load_pem_x509_csr(csr_pem).public_key())
            request_type = renewal.REQUEST_TYPE_FOR_KEY.get(kind)
            if request_type is None:
                raise CertificateMismatch(f"Cloudflare Origin CA cannot sign {kind} keys")
        validity = options.get("requested_validity", renewal.DEFAULT_VALIDITY)
        answer = await self.submit(credentials, csr_pem, names, request_type, validity)
        log.info("Cloudflare Origin CA signed certificate {cloudflare_id} for {names}",
                 cloudflare_id=answer.cloudflare_id, names=list(names))
        return IssuedChain(answer.chain_pem, source_ref=answer.cloudflare_id)

    async def _credentials_for(self, cert_id: object) -> Credentials:
        if not isinstance(cert_id, int):
            if self._credentials is None:
                raise renewal.RenewalOff("no Cloudflare credential: automatic renewal needs "
                                         "one stored with the certificate")
            return self._credentials
        store, wrapper = self._store, self._wrapper
        if store is None or wrapper is None:
            raise renewal.RenewalOff("this issuer has no store to read credentials from")
        return await store.transact(
            lambda txn: renewal.unseal(wrapper, txn.get_certificate(cert_id)))

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        """Nothing to forget: Cloudflare signs within one request. Idempotent."""
        return succeed(None)

    def renewal_window(self, not_before: datetime, not_after: datetime) -> Any:
        """Cloudflare suggests none: the lifetime rule applies."""
        return None


__all__ = ["OriginAnswer", "OriginIssuer"]
