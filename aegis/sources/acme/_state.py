"""The per-name state transitions of the issuance manager, each one store transaction.

They run inside ``IStore.transact`` (on the store thread for SQLite), which is also where
the slow-ish crypto of an attempt happens (key generation, sealing), off the reactor.
Every transition reads the current state first, so the order journal's writes in between
(the order URL) are never lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.defer import Deferred

from aegis.crypto.keys import KeyKind, generate_private_key, load_private_key_pem, private_key_pem
from aegis.crypto.keywrap import KeyWrapper, UnwrapError
from aegis.crypto.sealed import pending_order_key_context
from aegis.interfaces import IStore, IStoreTransaction
from aegis.sources.acme._fields import letsencrypt_fields
from aegis.store.errors import NotFound
from aegis.store.records import IssuanceState

CertKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


pending_key_context = pending_order_key_context


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """When a third of the lifetime remains (30 days for a 90-day certificate)."""
    return not_after - (not_after - not_before) / 3


def _ceil_second(moment: datetime) -> datetime:
    """Stored times have whole seconds: round up so nothing happens *before* a deadline."""
    if moment.microsecond:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def begin_attempt(
    txn: IStoreTransaction, wrapper: KeyWrapper, name: str, now: datetime, kind: KeyKind
) -> tuple[CertKey, IssuanceState]:
    """Mark ``name`` obtaining; reuse the key of an order in flight, else make one."""
    state = txn.get_issuance_state(name) or IssuanceState(name=name)
    key: CertKey | None = None
    if state.pending_key_sealed is not None:
        try:
            loaded = load_private_key_pem(
                wrapper.open(state.pending_key_sealed, pending_key_context(name))
            )
        except (UnwrapError, ValueError):
            loaded = None
        if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            key = loaded
    sealed = state.pending_key_sealed
    if key is None:
        key = generate_private_key(kind)
        sealed = wrapper.seal(private_key_pem(key), pending_key_context(name))
        state = replace(state, order_url=None)  # an order needs the key it was made with
    state = replace(state, status="obtaining", last_attempt_at=now, pending_key_sealed=sealed)
    txn.put_issuance_state(state)
    return key, state


def finish_success(
    txn: IStoreTransaction,
    wrapper: KeyWrapper,
    name: str,
    chain_pem: bytes,
    key: CertKey,
    now: datetime,
) -> IssuanceState:
    """Store the certificate (replacing this name's previous one in place) and mark valid."""
    state = txn.get_issuance_state(name) or IssuanceState(name=name)
    previous = None
    if state.certificate_id is not None:
        try:
            previous = txn.get_certificate(state.certificate_id)
        except NotFound:
            previous = None
    if previous is not None:
        fields = letsencrypt_fields(chain_pem, key, wrapper, uid=previous.uid)
        record = txn.replace_certificate(previous.id, fields)
    else:
        record = txn.add_certificate(letsencrypt_fields(chain_pem, key, wrapper))
    state = replace(
        state, status="valid", certificate_id=record.id, failures=0, last_error=None,
        next_attempt_at=None, renews_at=_ceil_second(
            renewal_time(record.not_before, record.not_after)
        ),
        order_url=None, pending_key_sealed=None,
    )
    txn.put_issuance_state(state)
    for challenge in txn.list_acme_challenges():  # answers left by interrupted orders
        if challenge.name == name:
            txn.delete_acme_challenge(challenge.token)
    return state


def finish_failure(
    txn: IStoreTransaction,
    name: str,
    error: str,
    now: datetime,
    retry_intervals: Sequence[float],
    not_before: datetime | None,
) -> IssuanceState:
    """Record a failure and when the next attempt may start (backoff, or the CA's wait)."""
    state = failed_state(txn.get_issuance_state(name) or IssuanceState(name=name),
                         error, now, retry_intervals, not_before)
    txn.put_issuance_state(state)
    return state


def failed_state(
    state: IssuanceState,
    error: str,
    now: datetime,
    retry_intervals: Sequence[float],
    not_before: datetime | None = None,
) -> IssuanceState:
    """``state`` after one more failure: the backoff step, or the CA's wait if later."""
    failures = state.failures + 1
    delay = retry_intervals[min(failures, len(retry_intervals)) - 1]
    next_attempt = now + timedelta(seconds=math.ceil(delay))
    if not_before is not None:
        next_attempt = max(next_attempt, not_before)
    return replace(
        state, status="failed", failures=failures, last_error=error,
        next_attempt_at=_ceil_second(next_attempt),
    )


class StoreOrderJournal:
    """:class:`aegis.sources.acme.issuer.OrderJournal` kept in the first name's state."""

    def __init__(self, store: IStore) -> None:
        self._store = store

    def current_order(self, names: Sequence[str]) -> Deferred[str | None]:
        def work(txn: IStoreTransaction) -> str | None:
            state = txn.get_issuance_state(names[0])
            return None if state is None else state.order_url

        return self._store.transact(work)

    def record_order(self, names: Sequence[str], url: str | None) -> Deferred[None]:
        def work(txn: IStoreTransaction) -> None:
            state = txn.get_issuance_state(names[0]) or IssuanceState(name=names[0])
            txn.put_issuance_state(replace(state, order_url=url))

        return self._store.transact(work)
