"""The seams of Aegis. Each is small, and its docstring is its contract.

* :class:`IStore` / :class:`IStoreTransaction`: all persistent state. SQLite is the embedded
  implementation, :class:`aegis.store.memory.MemoryStore` the in-memory one, and
  :class:`aegis.store.postgres.PostgresStore` the one several nodes share. No SQL lives
  outside a store.
* :class:`ICertificateIssuer`: anything that turns a CSR into a certificate chain (ACME,
  Cloudflare Origin CA). Sources plug in here; the registry and TLS layer never learn which.
* :class:`IRenewalAdvisor`: an issuer whose CA suggests renewal windows (ACME ARI).
* :class:`IOnDemandIssuance`: how the TLS handshake path asks for a certificate it lacks,
  without waiting for it.
* :class:`IChallengeResponder`: how the plain-HTTP listener answers ACME HTTP-01 requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from aegis.store.records import (
    AcmeChallenge,
    CertificateFields,
    CertificateRecord,
    HostFields,
    HostRecord,
    IssuanceState,
)

T = TypeVar("T")


class IStoreTransaction(Interface):
    """One all-or-nothing unit of work, handed to the function given to ``IStore.transact``.

    Its methods are synchronous and valid only while that function runs. Every method may
    raise :class:`aegis.store.errors.StoreError` subclasses: ``NotFound`` for an unknown id,
    ``Conflict`` for a taken name or a record still referenced, ``StoreBusy`` when the
    database stays locked. An exception leaving the function rolls back every change.
    """

    def get_setting(name: str) -> str | None:
        """The value of setting ``name``, or None."""

    def set_setting(name: str, value: str) -> None:
        """Create or overwrite a setting."""

    def delete_setting(name: str) -> None:
        """Remove a setting; no error if absent."""

    def add_certificate(fields: CertificateFields) -> CertificateRecord:
        """Store a new certificate; ``Conflict`` if its ``uid`` exists."""

    def get_certificate(cert_id: int) -> CertificateRecord:
        """One certificate; ``NotFound`` if unknown."""

    def list_certificates() -> list[CertificateRecord]:
        """Every certificate, ordered by id."""

    def replace_certificate(cert_id: int, fields: CertificateFields) -> CertificateRecord:
        """Overwrite a certificate's content in place; id and ``created_at`` stay.

        Hosts bound to it follow without being edited. ``NotFound`` if unknown.
        """

    def delete_certificate(cert_id: int) -> None:
        """Remove a certificate. ``NotFound`` if unknown; ``Conflict`` while a host uses it."""

    def hosts_using_certificate(cert_id: int) -> list[HostRecord]:
        """The hosts whose ``ssl_cert_id`` is ``cert_id``, ordered by id."""

    def add_host(fields: HostFields) -> HostRecord:
        """Store a new host. ``Conflict`` (field ``domain`` or ``aliases``) if one of its names
        belongs to another host; ``Conflict`` (field ``ssl_cert_id``) for an unknown
        certificate."""

    def get_host(host_id: int) -> HostRecord:
        """One host; ``NotFound`` if unknown."""

    def list_hosts() -> list[HostRecord]:
        """Every host, ordered by id."""

    def replace_host(host_id: int, fields: HostFields) -> HostRecord:
        """Overwrite a host in place, with the same checks as ``add_host``."""

    def delete_host(host_id: int) -> None:
        """Remove a host and free its names and certificate binding. ``NotFound`` if unknown."""

    def get_issuance_state(name: str) -> IssuanceState | None:
        """The automatic-issuance state of hostname ``name``, or None if none was kept."""

    def put_issuance_state(state: IssuanceState) -> None:
        """Create or overwrite the state of ``state.name`` (idempotent).

        ``certificate_id`` is not a reference the store enforces: it may name a certificate
        deleted since; readers check.
        """

    def list_issuance_states() -> list[IssuanceState]:
        """Every kept issuance state, ordered by name."""

    def delete_issuance_state(name: str) -> None:
        """Forget the state of ``name``; no error if absent."""

    def put_acme_challenge(challenge: AcmeChallenge) -> None:
        """Create or overwrite the HTTP-01 answer for ``challenge.token`` (idempotent)."""

    def delete_acme_challenge(token: str) -> None:
        """Remove the answer for ``token``; no error if absent."""

    def list_acme_challenges() -> list[AcmeChallenge]:
        """Every HTTP-01 answer kept, ordered by token."""


class IStore(Interface):
    """Persistent state behind one transactional entry point.

    Concurrency: transactions are serialised against each other (and, for SQLite, against
    other processes through the database lock). ``transact`` never blocks the reactor: the
    work runs on a store-owned thread. ``transact_blocking`` is for code that runs before the
    reactor starts or without one (start-up, ``aegis rotate-key``).
    """

    def transact(work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        """Run ``work(txn)`` in one transaction off the reactor thread.

        The Deferred fires with its result after commit, or fails with its exception after
        rollback (store failures as ``StoreError`` subclasses). ``work`` must not touch the
        reactor; it may run on another thread.
        """

    def transact_blocking(work: Callable[[IStoreTransaction], T]) -> T:
        """Like ``transact`` but on the calling thread; never call it from the reactor."""

    def schema_version() -> int:
        """The schema version of the open database."""

    def close() -> None:
        """Release the database. Idempotent."""


class ICertificateIssuer(Interface):
    """Turns a certificate signing request into a signed chain, for the lifecycle engine.

    ``issue`` may take seconds to minutes (ACME validation). It must check nothing about our
    host policy: the caller (:mod:`aegis.certs.lifecycle`) has done that. It fails with a
    descriptive exception (never one carrying secrets) and must be safe to call again after
    failure; a failure that is the CA asking us to wait carries ``retry_at`` (epoch seconds).
    Cancelling the Deferred stops the attempt (shutdown, or the names are no longer wanted).
    """

    source = Attribute("The registered source whose certificates this issues, e.g. ACME's.")
    identity = Attribute(
        "Who issues: the CA and account, as a stable string (e.g. 'acme <directory URL>'). "
        "Each certificate records it; when it changes, certificates made by another "
        "identity are renewed at once.")
    key_kind = Attribute("The key type to generate for its certificates ('ecdsa-p256', ...).")
    # Optional, for an issuer over several CAs (ACME with fallback directories):
    # ``identities`` (every identity that counts as current) and ``identity_for(chain)``
    # (which of them issued a chain it just returned; recorded on the certificate).

    def issue(csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        """Obtain a chain for ``names``; fires with the PEM chain (leaf first) as bytes, or an
        :class:`aegis.certs.lifecycle.transitions.IssuedChain` carrying the issuer's own
        reference for it (stored as ``source_ref``).

        ``options``: the demand's source-specific public facts (a mapping, or None), e.g.
        which stored certificate a renewal is for; an issuer ignores what it does not use.
        """

    def abandon(names: Sequence[str]) -> Deferred[None]:
        """Forget any order in flight for ``names`` (their host went away). Idempotent."""

    def renewal_window(not_before: datetime, not_after: datetime) -> Any:
        """A CA-suggested renewal window ``(start, end)`` for a certificate it issued, or
        None to use the lifetime rule (a third of the lifetime left; half under 10 days)."""


class IRenewalAdvisor(ICertificateIssuer):
    """An issuer whose CA suggests renewal windows after issuance (ACME ARI, RFC 9773).

    The lifecycle engine asks :meth:`renewal_info` for every valid certificate the issuer
    made, again at the advice's ``next_check`` (at most a day later), and moves the
    renewal time into the suggested window; a renewal then goes through
    :meth:`issue_replacing`, so the CA knows which certificate the new one replaces.
    """

    def renewal_info(certificate: CertificateRecord) -> Deferred[Any]:
        """Fires with an ``aegis.certs.lifecycle.policy.RenewalAdvice`` for
        ``certificate`` (``window`` None: the CA suggests nothing). Fails on a network or
        CA error; the caller asks again later and keeps the renewal time it had."""

    def issue_replacing(csr_pem: bytes, names: Sequence[str],
                        replaces: CertificateRecord, options: Any = None) -> Deferred[Any]:
        """Like ``issue``, telling the CA the order replaces ``replaces`` (ARI
        ``replaces``); falls back to a plain order when the CA refuses that."""


class IOnDemandIssuance(Interface):
    """Called from the TLS handshake path when a host that should have an automatic
    certificate has none. Must return at once, never raise, never do I/O itself; repeated
    calls for one name while an order is running must not start another order."""

    def certificate_wanted(hostname: str) -> None:
        """Note that ``hostname`` (normalised) needs a certificate."""


class IChallengeResponder(Interface):
    """Answers ACME HTTP-01 validation requests from memory."""

    def key_authorization(token: str) -> bytes | None:
        """The key authorisation for ``token`` (already checked to be base64url), or None."""
