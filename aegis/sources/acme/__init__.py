"""Let's Encrypt (any RFC 8555 CA): client, HTTP-01 responder, issuer and issuance manager.

The pieces, from the wire up:

* :mod:`._transport`: signed requests over treq, nonces, every retry rule;
* :mod:`._client`: the RFC 8555 operations and the account;
* :mod:`.http01`: the challenge answers and the port-80 request rules;
* :mod:`.issuer`: one order end to end (:class:`AcmeIssuer`, an ``ICertificateIssuer``);
* when to order, renew and retry is the lifecycle engine's business
  (:mod:`aegis.certs.lifecycle`), the same for every source.

:func:`build_acme` wires them the way ``aegis.tap`` needs; see ``docs/acme.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from aegis.certs.lifecycle.issuers import IssuerContext
from aegis.certs.sources import AUTOCERT, SourceSpec, register
from aegis.crypto.keys import KeyKind
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore
from aegis.sources.acme._client import AcmeClient
from aegis.sources.acme._journal import StoreOrderJournal
from aegis.sources.acme._transport import (
    AcmeError,
    AcmeProblem,
    AcmeRateLimited,
    AcmeTransport,
    AcmeUnavailable,
    RetryPolicy,
)
from aegis.sources.acme.account import (
    StoreAccountBook,
    acme_http_client,
    load_or_create_account_key,
    read_ca_bundle,
)
from aegis.sources.acme.challenges import HTTP_01
from aegis.sources.acme.eab import ExternalAccount, external_account
from aegis.sources.acme.fallback import FallbackIssuer, OriginJournal
from aegis.sources.acme.http01 import ChallengeResponder, challenge_response, is_challenge_path
from aegis.sources.acme.issuer import (
    SOURCE,
    AcmeIssuer,
    CertificateMismatch,
    OrderJournal,
    verify_chain,
)
from aegis.sources.acme.profiles import profile_for
from aegis.sources.acme.tlsalpn01 import TlsAlpnResponder


@dataclass(frozen=True)
class AcmeParts:
    """Everything :func:`build_acme` made: the lifecycle engine orders through ``issuer``;
    the HTTP listener serves ``responder`` through :func:`challenge_response`."""

    client: AcmeClient
    issuer: AcmeIssuer
    responder: ChallengeResponder
    tls_alpn: TlsAlpnResponder | None = None


def build_acme(
    reactor: Any,
    store: IStore,
    wrapper: KeyWrapper,
    directory_url: str,
    contact_email: str = "",
    ca_bundle: Path | None = None,
    key_kind: KeyKind = "ecdsa-p256",
    http: Any = None,
    policy: RetryPolicy | None = None,
    clock: Any = None,
    pace: Callable[[], Deferred[None]] | None = None,
    default_profile: str = "",
    challenge: str = HTTP_01,
    external_account: ExternalAccount | None = None,
    origin_only: bool = False,
) -> AcmeParts:
    """Build the ACME source. Blocking (reads the CA bundle, loads or creates the account
    key in one transaction): call it at start-up, before the reactor runs.

    ``clock`` (default: ``reactor``) stamps challenge answers; ``pace`` is the CA's request
    budget (:meth:`aegis.certs.lifecycle.IssuerContext.pace`); ``default_profile`` the
    ACME profile of hosts that name none (``AEGIS_ACME_PROFILE``); ``challenge`` which
    challenge to answer (``AEGIS_ACME_CHALLENGE``: http-01, tls-alpn-01 or auto; the
    latter two answer ``acme-tls/1`` on the HTTPS listener); ``external_account`` the
    CA's EAB kid and HMAC key (``AEGIS_ACME_EAB_*``), for CAs that require it;
    ``origin_only`` resumes only orders at this directory's host (one of several CAs).
    """
    key = store.transact_blocking(lambda txn: load_or_create_account_key(txn, wrapper))
    if http is None:
        http = acme_http_client(reactor, None if ca_bundle is None else read_ca_bundle(ca_bundle))
    transport = AcmeTransport(reactor, http, key, policy or RetryPolicy(), time.time, pace)
    client = AcmeClient(transport, key, directory_url, contact_email, StoreAccountBook(store),
                        external_account)
    stamp_clock = clock if clock is not None else reactor

    def now() -> datetime:
        return datetime.fromtimestamp(stamp_clock.seconds(), UTC)

    responder = ChallengeResponder(store, now)
    def profile(names: Sequence[str]) -> Deferred[str | None]:
        return store.transact(lambda txn: profile_for(txn.list_hosts(), names, default_profile))

    tls_alpn = None if challenge == HTTP_01 else TlsAlpnResponder()
    journal: OrderJournal = StoreOrderJournal(store)
    if origin_only:
        journal = OriginJournal(journal, directory_url)
    issuer = AcmeIssuer(reactor, client, responder, journal,
                        key_kind=key_kind, clock=stamp_clock, profile_for=profile,
                        challenge=challenge, tls_alpn=tls_alpn)
    return AcmeParts(client, issuer, responder, tls_alpn)


def _issuer(context: IssuerContext) -> AcmeIssuer | FallbackIssuer:
    """The source's issuer from the settings (``AEGIS_ACME_*``); its HTTP-01 answers go
    to the port-80 listener and are loaded before the first attempt. With
    ``AEGIS_ACME_FALLBACK_DIRECTORIES``, one issuer (and account) per directory behind a
    :class:`FallbackIssuer`; the EAB settings go to the primary directory."""
    settings = context.settings
    directories = (settings.acme_directory,
                   *getattr(settings, "acme_fallback_directories", ()))
    issuers = []
    for position, directory in enumerate(directories):
        parts = build_acme(
            context.reactor, context.store, context.wrapper, directory,
            contact_email=settings.acme_email, ca_bundle=settings.acme_ca_bundle,
            key_kind="rsa-2048" if settings.acme_key_type == "rsa-2048" else "ecdsa-p256",
            clock=context.clock, pace=context.pace(directory),
            default_profile=getattr(settings, "acme_profile", ""),
            challenge=getattr(settings, "acme_challenge", HTTP_01),
            external_account=None if position else external_account(
                getattr(settings, "acme_eab_kid", ""),
                getattr(settings, "acme_eab_hmac_key", "")),
            origin_only=len(directories) > 1,
        )
        context.add_responder(parts.responder)
        if position == 0:
            context.add_preload(parts.responder.load)  # one table: every CA's answers
        issuers.append(parts.issuer)
    if len(issuers) == 1:
        return issuers[0]
    return FallbackIssuer(context.clock, issuers)


SPEC = register(SourceSpec(
    name=SOURCE,
    label="Let's Encrypt (ACME)",
    selection_step=AUTOCERT,
    host_mode=SOURCE,
    renews_itself=True,
    wildcards=False,  # HTTP-01 cannot validate wildcard names
    issuer=_issuer,
    renewal_note="renewed by Aegis through ACME before it expires",
))


__all__ = [
    "SOURCE",
    "SPEC",
    "AcmeClient",
    "AcmeError",
    "AcmeIssuer",
    "AcmeParts",
    "AcmeProblem",
    "AcmeRateLimited",
    "AcmeUnavailable",
    "CertificateMismatch",
    "ChallengeResponder",
    "RetryPolicy",
    "build_acme",
    "challenge_response",
    "is_challenge_path",
    "verify_chain",
]
