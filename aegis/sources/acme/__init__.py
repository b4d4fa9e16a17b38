"""Let's Encrypt (any RFC 8555 CA): client, HTTP-01 responder, issuer and issuance manager.

The pieces, from the wire up:

* :mod:`._transport`: signed requests over treq, nonces, every retry rule;
* :mod:`._client`: the RFC 8555 operations and the account;
* :mod:`.http01`: the challenge answers and the port-80 request rules;
* :mod:`.issuer`: one order end to end (:class:`AcmeIssuer`, an ``ICertificateIssuer``);
* :mod:`.manager`: when to order, renew and retry (:class:`IssuanceManager`, a Service and
  the ``IOnDemandIssuance`` of the TLS layer).

:func:`build_acme` wires them the way ``aegis.tap`` needs; see ``docs/acme.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aegis.crypto.keys import KeyKind
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore
from aegis.sources.acme._client import AcmeClient
from aegis.sources.acme._state import StoreOrderJournal
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
from aegis.sources.acme.http01 import ChallengeResponder, challenge_response, is_challenge_path
from aegis.sources.acme.issuer import AcmeIssuer, CertificateMismatch, verify_chain
from aegis.sources.acme.manager import IssuanceManager


@dataclass(frozen=True)
class AcmeParts:
    """Everything :func:`build_acme` made; ``manager`` goes into the service tree, the
    HTTP listener serves ``responder`` through :func:`challenge_response`."""

    client: AcmeClient
    issuer: AcmeIssuer
    responder: ChallengeResponder
    manager: IssuanceManager


def build_acme(
    reactor: Any,
    store: IStore,
    wrapper: KeyWrapper,
    directory_url: str,
    reload: Callable[[], object],
    contact_email: str = "",
    ca_bundle: Path | None = None,
    key_kind: KeyKind = "ecdsa-p256",
    http: Any = None,
    policy: RetryPolicy | None = None,
    clock: Any = None,
) -> AcmeParts:
    """Build the ACME source. Blocking (reads the CA bundle, loads or creates the account
    key in one transaction): call it at start-up, before the reactor runs.

    ``clock`` (default: ``reactor``) drives the manager's schedule; tests pass a ``Clock``
    to move time while the network runs on the real reactor.
    """
    key = store.transact_blocking(lambda txn: load_or_create_account_key(txn, wrapper))
    if http is None:
        http = acme_http_client(reactor, None if ca_bundle is None else read_ca_bundle(ca_bundle))
    transport = AcmeTransport(reactor, http, key, policy or RetryPolicy(), time.time)
    client = AcmeClient(transport, key, directory_url, contact_email, StoreAccountBook(store))
    manager_clock = clock if clock is not None else reactor

    def now() -> Any:
        return IssuanceManager.now_of(manager_clock)

    responder = ChallengeResponder(store, now)
    issuer = AcmeIssuer(reactor, client, responder, StoreOrderJournal(store))
    manager = IssuanceManager(
        manager_clock, store, wrapper, issuer, reload, key_kind, preload=[responder.load]
    )
    return AcmeParts(client, issuer, responder, manager)


__all__ = [
    "AcmeClient",
    "AcmeError",
    "AcmeIssuer",
    "AcmeParts",
    "AcmeProblem",
    "AcmeRateLimited",
    "AcmeUnavailable",
    "CertificateMismatch",
    "ChallengeResponder",
    "IssuanceManager",
    "RetryPolicy",
    "build_acme",
    "challenge_response",
    "is_challenge_path",
    "verify_chain",
]
