"""A fallback CA: an ordered list of ACME directories behind one issuer (as Caddy does).

``AEGIS_ACME_FALLBACK_DIRECTORIES`` lists directories to use after ``AEGIS_ACME_DIRECTORY``
(e.g. Let's Encrypt, then ZeroSSL with EAB), each with its own account. An attempt goes to
the first CA that is not marked down. When a CA fails *as a CA* — unreachable or 5xx after
the transport's retries (:class:`AcmeUnavailable`), or asking us to wait
(:class:`AcmeRateLimited`) — it is marked down (for ``DOWN_FOR``, or until its Retry-After)
and the same attempt goes on at the next CA. Failures that are about the name (a failed
validation, a refused identifier) are not the CA's fault: another CA would fail the same,
so they end the attempt and the engine's backoff applies.

Each certificate records the CA that issued it (``identity_for``: ``issued_by`` in its
``extra``); every CA of the list counts as current (``identities``), so a certificate from
the fallback is renewed at its normal time — at the first healthy CA, normally the primary
again — rather than at once. Renewal information (ARI) and ``replaces`` go to the CA that
issued the certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aegis.certs.lifecycle.transitions import ISSUED_BY
from aegis.interfaces import IRenewalAdvisor
from aegis.sources.acme._transport import AcmeRateLimited, AcmeUnavailable
from aegis.sources.acme.issuer import SOURCE, AcmeIssuer, OrderJournal
from aegis.store.records import CertificateRecord

log = Logger()

DOWN_FOR = 600.0  # seconds a CA that failed as a CA is passed over


def parse_directories(value: str) -> tuple[str, ...]:
    """A comma-separated list of https directory URLs (empty: none)."""
    found = tuple(part.strip() for part in value.split(",") if part.strip())
    for url in found:
        if not url.startswith("https://") or " " in url:
            raise ValueError(f"{url!r} is not an https:// ACME directory URL")
    if len(set(found)) != len(found):
        raise ValueError("a directory appears twice")
    return found


class OriginJournal:
    """An order journal that only resumes orders of one CA (its directory's origin): the
    same name's order at another CA is not this CA's to poll."""

    def __init__(self, journal: OrderJournal, directory_url: str) -> None:
        self._journal = journal
        scheme, _, rest = directory_url.partition("://")
        self._origin = f"{scheme}://{rest.split('/', 1)[0]}/"

    def current_order(self, names: Sequence[str]) -> Deferred[str | None]:
        return self._journal.current_order(names).addCallback(
            lambda url: url if url is not None and url.startswith(self._origin) else None)

    def record_order(self, names: Sequence[str], url: str | None) -> Deferred[None]:
        return self._journal.record_order(names, url)


@implementer(IRenewalAdvisor)
class FallbackIssuer:
    """The ACME source's issuer over several CAs, in order; see the module docstring."""

    source = SOURCE

    def __init__(self, clock: IReactorTime, issuers: Sequence[AcmeIssuer],
                 down_for: float = DOWN_FOR) -> None:
        if not issuers:
            raise ValueError("a fallback issuer needs at least one CA")
        self._clock = clock
        self.issuers = tuple(issuers)
        self.identity = self.issuers[0].identity
        self.identities = frozenset(i.identity for i in self.issuers)
        self.key_kind = self.issuers[0].key_kind
        self._down_for = down_for
        self._down_until: dict[str, float] = {}
        self._issued_by: dict[bytes, str] = {}

    def down(self) -> list[str]:
        """The identities of the CAs passed over now."""
        now = self._clock.seconds()
        return [i.identity for i in self.issuers if self._down_until.get(i.identity, 0) > now]

    def _order(self) -> list[AcmeIssuer]:
        now = self._clock.seconds()
        healthy = [i for i in self.issuers if self._down_until.get(i.identity, 0) <= now]
        return healthy + [i for i in self.issuers if i not in healthy]

    def identity_for(self, chain: bytes) -> str:
        """Which CA issued ``chain`` (one this issuer returned): recorded on the certificate."""
        return self._issued_by.pop(chain, self.identity)

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._issue(csr_pem, tuple(names), None))

    def issue_replacing(self, csr_pem: bytes, names: Sequence[str],
                        replaces: CertificateRecord, options: Any = None) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._issue(csr_pem, tuple(names), replaces))

    async def _issue(self, csr_pem: bytes, names: tuple[str, ...],
                     replaces: CertificateRecord | None) -> bytes:
        order = self._order()
        for position, issuer in enumerate(order):
            try:
                if replaces is not None:
                    chain: bytes = await issuer.issue_replacing(csr_pem, names, replaces)
                else:
                    chain = await issuer.issue(csr_pem, names)
            except (AcmeUnavailable, AcmeRateLimited) as exc:
                retry_at = getattr(exc, "retry_at", None)
                until = self._clock.seconds() + self._down_for
                self._down_until[issuer.identity] = max(until, retry_at or 0.0)
                if position + 1 == len(order):
                    raise
                log.warn("acme_ca_down ca={ca} error={error}; trying {next}",
                         ca=issuer.identity, error=str(exc), next=order[position + 1].identity)
                continue
            self._down_until.pop(issuer.identity, None)
            self._issued_by[chain] = issuer.identity
            return chain
        raise AssertionError("unreachable: the last CA's failure is raised")

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        return Deferred.fromCoroutine(self._abandon(tuple(names)))

    async def _abandon(self, names: tuple[str, ...]) -> None:
        for issuer in self.issuers:
            await issuer.abandon(names)

    def _maker(self, certificate: CertificateRecord) -> AcmeIssuer:
        made_by = certificate.extra.get(ISSUED_BY)
        for issuer in self.issuers:
            if issuer.identity == made_by:
                return issuer
        return self.issuers[0]

    def renewal_window(self, not_before: Any, not_after: Any) -> Any:
        return None

    def renewal_info(self, certificate: CertificateRecord) -> Deferred[Any]:
        return self._maker(certificate).renewal_info(certificate)

    def known_profiles(self) -> dict[str, str] | None:
        return self.issuers[0].known_profiles()


__all__ = ["DOWN_FOR", "FallbackIssuer", "OriginJournal", "parse_directories"]
