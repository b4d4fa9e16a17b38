"""``AcmeIssuer``: one RFC 8555 order, from names and CSR to a verified chain.

The order URL is written to an :class:`OrderJournal` as soon as the CA creates it, so a
restart resumes that order (POST-as-GET on it) instead of creating another; a resumed order
that has become invalid or expired is replaced once. Authorisations the CA already holds as
valid (Pebble reuses them half the time) are skipped. Polling starts fast (50 ms) and backs
off to one second, honouring the server's Retry-After, within a bounded total time.

What comes back is checked before anyone stores it (docs/security.md, line 32): the leaf
must carry our public key and exactly the names we asked for, and each certificate must be
signed by the next. A mismatch is an error and nothing is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from aegis.certs.lifecycle.policy import RenewalAdvice
from aegis.certs.lifecycle.transitions import ISSUED_BY
from aegis.crypto.keys import KeyKind, public_keys_equal
from aegis.interfaces import IRenewalAdvisor
from aegis.sources.acme import ari
from aegis.sources.acme._client import AcmeClient
from aegis.sources.acme._transport import AcmeError, AcmeProblem
from aegis.sources.acme.challenges import (
    HTTP_01,
    TLS_ALPN_01,
    ChallengeChoice,
    ValidationFailed,
    challenge_token,
)
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.sources.acme.profiles import ProfileError, check_offered
from aegis.sources.acme.tlsalpn01 import TlsAlpnResponder
from aegis.store.records import CertificateRecord

log = Logger()

SOURCE = "letsencrypt"

POLL_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
POLL_STEADY = 1.0
POLL_CAP = 10.0
ORDER_TIMEOUT = 300.0
#: newOrder problems after which an order with ``replaces`` is made again without it: the
#: CA knows the certificate as replaced already, or does not know it (RFC 9773 §5).
REPLACES_REFUSED = frozenset({"alreadyReplaced", "malformed"})


class CertificateMismatch(AcmeError):
    """The CA returned a chain that does not match our key or names (rejected)."""


class ProfileLookup(Protocol):
    """The ACME profile an order of ``names`` asks for (None: the CA's default)."""

    def __call__(self, names: Sequence[str]) -> Deferred[str | None]: ...


class OrderJournal(Protocol):
    """Remembers the order in flight for a name set (the store, in production)."""

    def current_order(self, names: Sequence[str]) -> Deferred[str | None]: ...

    def record_order(self, names: Sequence[str], url: str | None) -> Deferred[None]: ...


class MemoryJournal:
    """An :class:`OrderJournal` that forgets on restart (tools and tests)."""

    def __init__(self) -> None:
        self.orders: dict[tuple[str, ...], str] = {}

    def current_order(self, names: Sequence[str]) -> Deferred[str | None]:
        return succeed(self.orders.get(tuple(names)))

    def record_order(self, names: Sequence[str], url: str | None) -> Deferred[None]:
        if url is None:
            self.orders.pop(tuple(names), None)
        else:
            self.orders[tuple(names)] = url
        return succeed(None)


def verify_chain(chain_pem: bytes, csr_pem: bytes, names: Sequence[str]) -> None:
    """Raise :class:`CertificateMismatch` unless ``chain_pem`` is a linked chain whose leaf
    holds the CSR's public key and exactly ``names`` as DNS SANs."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise CertificateMismatch("the CA's certificate chain does not parse") from None
    leaf = chain[0]
    if not public_keys_equal(leaf.public_key(), csr.public_key()):
        raise CertificateMismatch("the CA's certificate does not carry our public key")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateMismatch("the CA's certificate has no subjectAltName") from None
    got = {name.lower() for name in sans.get_values_for_type(x509.DNSName)}
    if got != {name.lower() for name in names}:
        raise CertificateMismatch(
            f"the CA's certificate names {sorted(got)} differ from the ordered {sorted(names)}"
        )
    for child, parent in pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except Exception as exc:  # InvalidSignature, TypeError (key type), ValueError
            raise CertificateMismatch(f"the CA's chain is not linked ({type(exc).__name__})") \
                from None


@implementer(IRenewalAdvisor)
class AcmeIssuer:
    """:class:`aegis.interfaces.ICertificateIssuer` for an ACME CA, with ARI
    (:class:`aegis.interfaces.IRenewalAdvisor`) where the CA's directory has it.

    ``identity`` names the CA by its directory URL: certificates record it, and a change of
    ``AEGIS_ACME_DIRECTORY`` (staging to production, another CA) makes the lifecycle renew
    every certificate another directory issued, at once. ``clock`` (default: ``reactor``)
    dates the renewal advice, in the lifecycle engine's time.
    """

    source = SOURCE

    def __init__(
        self,
        reactor: IReactorTime,
        client: AcmeClient,
        responder: ChallengeResponder,
        journal: OrderJournal | None = None,
        order_timeout: float = ORDER_TIMEOUT,
        key_kind: KeyKind = "ecdsa-p256",
        clock: IReactorTime | None = None,
        profile_for: ProfileLookup | None = None,
        challenge: str = HTTP_01,
        tls_alpn: TlsAlpnResponder | None = None,
    ) -> None:
        self._challenges = ChallengeChoice(challenge if tls_alpn is not None else HTTP_01)
        self._tls_alpn = tls_alpn
        self._clock = clock if clock is not None else reactor
        self._profile_for = profile_for
        self.identity = client.identity
        self.key_kind = key_kind
        self._reactor = reactor
        self._client = client
        self._responder = responder
        self._journal: OrderJournal = journal if journal is not None else MemoryJournal()
        self._timeout = order_timeout

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._issue(csr_pem, tuple(names)))

    def issue_replacing(self, csr_pem: bytes, names: Sequence[str],
                        replaces: CertificateRecord, options: Any = None) -> Deferred[Any]:
        """An order naming the certificate it renews (ARI ``replaces``) when this CA made
        it and has ARI: Let's Encrypt exempts such renewals from its rate limits."""
        return Deferred.fromCoroutine(self._issue(csr_pem, tuple(names), replaces))

    async def _replaces_id(self, replaces: CertificateRecord | None) -> str | None:
        if replaces is None or replaces.extra.get(ISSUED_BY) != self.identity:
            return None  # another CA's certificate means nothing to this one
        if await self._client.renewal_info_url() is None:
            return None  # RFC 9773 §5: only to a server that advertises renewalInfo
        try:
            return ari.certificate_id_of_pem(replaces.chain_pem)
        except ari.RenewalInfoError:
            return None

    def known_profiles(self) -> dict[str, str] | None:
        """The CA's ``meta.profiles`` once its directory has been read (memory only)."""
        return self._client.known_profiles()

    def renewal_info(self, certificate: CertificateRecord) -> Deferred[RenewalAdvice]:
        """The CA's suggested window for ``certificate`` (RFC 9773), or a window of None
        when the directory has no ``renewalInfo`` (asked again in a day) or the
        certificate has no ARI identifier."""
        return Deferred.fromCoroutine(self._renewal_info(certificate))

    async def _renewal_info(self, certificate: CertificateRecord) -> RenewalAdvice:
        def now() -> datetime:
            return datetime.fromtimestamp(self._clock.seconds(), UTC)

        try:
            cert_id = ari.certificate_id_of_pem(certificate.chain_pem)
        except ari.RenewalInfoError:
            return RenewalAdvice(None, now() + ari.MAX_CHECK_INTERVAL)
        found = await self._client.renewal_info(cert_id)
        if found is None:
            return RenewalAdvice(None, now() + ari.MAX_CHECK_INTERVAL)
        document, retry_after = found
        try:
            return ari.parse_renewal_info(document, now(), retry_after)
        except ari.RenewalInfoError as exc:
            raise AcmeError(f"the CA's renewalInfo answer is unusable: {exc}") from None

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        """Forget the order of ``names`` and withdraw their HTTP-01 answers: the host went
        away, so nobody should resume that order or answer for it."""
        return Deferred.fromCoroutine(self._abandon(tuple(names)))

    async def _abandon(self, names: tuple[str, ...]) -> None:
        await self._journal.record_order(names, None)
        await self._responder.withdraw_names(names)
        if self._tls_alpn is not None:
            self._tls_alpn.withdraw_names(names)

    def renewal_window(self, not_before: datetime, not_after: datetime) -> Any:
        """No CA-suggested window (ARI comes with RFC 9773 support): the lifetime rule."""
        return None

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self._reactor, seconds, lambda: None)

    async def _poll_wait(self, step: int, deadline: float, hint: float | None) -> None:
        delay = POLL_DELAYS[step] if step < len(POLL_DELAYS) else POLL_STEADY
        if hint is not None:
            delay = max(delay, min(hint, POLL_CAP))
        if self._reactor.seconds() + delay > deadline:
            raise AcmeError("the ACME order did not complete in time")
        await self._sleep(delay)

    async def _profile(self, names: tuple[str, ...]) -> str | None:
        """The profile to ask for, if the CA offers profiles at all (see .profiles)."""
        if self._profile_for is None:
            return None
        wanted = await self._profile_for(names)
        if wanted is None:
            return None
        offered = await self._client.profiles()
        if offered is None:
            log.info("acme_profile_unsupported names={names} profile={profile}",
                     names=",".join(names), profile=wanted)
            return None
        try:
            check_offered(wanted, offered)
        except ProfileError as exc:
            raise AcmeError(str(exc)) from None
        return wanted

    async def _open_order(self, names: tuple[str, ...],
                          replaces: str | None) -> tuple[str, messages.Order]:
        url = await self._journal.current_order(names)
        if url is not None:
            try:
                order, _ = await self._client.order(url)
            except AcmeError as exc:
                log.info("acme_order_unusable names={names} error={error}",
                         names=",".join(names), error=str(exc))
            else:
                if order.status not in (messages.STATUS_INVALID,) and str(
                    order.status) != "expired":
                    log.info("acme_order_resumed names={names}", names=",".join(names))
                    return url, order
        profile = await self._profile(names)
        try:
            url, order = await self._client.new_order(names, replaces, profile)
        except AcmeProblem as problem:
            if replaces is None or problem.code not in REPLACES_REFUSED:
                raise
            log.info("acme_replaces_refused names={names} error={error}",
                     names=",".join(names), error=str(problem))
            url, order = await self._client.new_order(names, None, profile)
        await self._journal.record_order(names, url)
        log.info("acme_order_created names={names}", names=",".join(names))
        return url, order

    async def _authorize(self, authz_url: str, deadline: float) -> None:
        authz, _ = await self._client.authorization(authz_url)
        if authz.status == messages.STATUS_VALID:
            return
        name = str(authz.identifier.value)
        challenge, kind = self._challenges.pick(name, authz.challenges)
        token = challenge_token(challenge)
        key_authorization = self._client.key_authorization(token)
        if kind == TLS_ALPN_01 and self._tls_alpn is not None:
            self._tls_alpn.publish(name, key_authorization)
        else:
            await self._responder.publish(token, key_authorization, name)
        # Withdrawn when validation ends either way, but not on cancellation (shutdown): the
        # CA may still come for it, and the next start resumes this order and serves it.
        try:
            if challenge.status == messages.STATUS_PENDING:
                await self._client.answer(challenge.uri)
            step = 0
            while True:
                authz, hint = await self._client.authorization(authz_url)
                if authz.status == messages.STATUS_VALID:
                    break
                if authz.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                    detail = "; ".join(
                        str(c.error.detail) for c in authz.challenges if c.error is not None
                    )
                    raise ValidationFailed(
                        f"{kind} validation of {name} failed: {authz.status.name}"
                        + (f" ({detail[:300]})" if detail else ""), kind)
                await self._poll_wait(step, deadline, hint)
                step += 1
        except CancelledError:
            raise
        except BaseException as exc:
            self._challenges.failed(name, kind, exc)
            await self._withdraw(token, name)
            raise
        self._challenges.succeeded(name, kind)
        await self._withdraw(token, name)

    async def _withdraw(self, token: str, name: str) -> None:
        if self._tls_alpn is not None:
            self._tls_alpn.withdraw(name)
        await self._responder.withdraw(token)

    async def _issue(self, csr_pem: bytes, names: tuple[str, ...],
                     replaced: CertificateRecord | None = None) -> bytes:
        deadline = self._reactor.seconds() + self._timeout
        url, order = await self._open_order(names, await self._replaces_id(replaced))
        if order.status in (messages.STATUS_PENDING, messages.STATUS_READY):
            for authz_url in order.authorizations:
                await self._authorize(authz_url, deadline)
        step = 0
        hint: float | None = None
        finalized = order.status in (messages.STATUS_PROCESSING, messages.STATUS_VALID)
        while not (order.status == messages.STATUS_VALID and order.certificate):
            if order.status == messages.STATUS_INVALID:
                await self._journal.record_order(names, None)
                detail = order.error.detail if order.error is not None else "no detail"
                raise AcmeError(f"the ACME order became invalid: {detail}")
            if order.status == messages.STATUS_READY and not finalized:
                csr = x509.load_pem_x509_csr(csr_pem)
                finalized = True
                order = await self._client.finalize(
                    str(order.finalize), csr.public_bytes(serialization.Encoding.DER)
                )
                continue
            await self._poll_wait(step, deadline, hint)
            order, hint = await self._client.order(url)
            step += 1
        chain = await self._client.download(str(order.certificate))
        await self._journal.record_order(names, None)
        verify_chain(chain, csr_pem, names)
        await self._responder.withdraw_names(names)  # answers left by interrupted orders
        return chain
