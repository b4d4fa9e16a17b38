"""The lifecycle's state transitions that touch the store, each one transaction.

They run inside ``IStore.transact`` (the store thread for SQLite), which is also where the
slow-ish crypto of an attempt happens (key generation, sealing), off the reactor. Each reads
the current row first, so what an issuer wrote in between (its order URL) is never lost.
The pure parts (:func:`failed_state`) are shared with the engine's in-memory fallback for
a store that cannot record (disk full).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aegis.certs.lifecycle.budget import FailureBudget
from aegis.certs.lifecycle.demand import Demand
from aegis.certs.lifecycle.policy import ceil_second, lifetime_renewal_time
from aegis.crypto.keys import (
    KeyKind,
    generate_private_key,
    key_type_name,
    load_private_key_pem,
    private_key_pem,
)
from aegis.crypto.keywrap import KeyWrapper, UnwrapError
from aegis.crypto.sealed import certificate_key_context, pending_order_key_context
from aegis.interfaces import IStoreTransaction
from aegis.store.errors import NotFound
from aegis.store.records import CertificateFields, CertificateRecord, IssuanceState

CertKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
ISSUED_BY = "issued_by"  # the certificate's ``extra`` key recording the issuer identity


@dataclass(frozen=True)
class IssuedChain:
    """What ``ICertificateIssuer.issue`` may return instead of bare PEM bytes: the chain
    plus the issuer's own reference for it (e.g. Cloudflare's certificate id), stored as the
    certificate's ``source_ref``."""

    chain_pem: bytes
    source_ref: str | None = None


def split_issued(result: object) -> tuple[bytes, str | None]:
    """``(chain_pem, source_ref)`` from an issuer's result (bytes or :class:`IssuedChain`)."""
    if isinstance(result, IssuedChain):
        return result.chain_pem, result.source_ref
    if isinstance(result, bytes):
        return result, None
    raise TypeError(f"an issuer returned {type(result).__name__}, not PEM bytes")


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def issued_fields(
    chain_pem: bytes, key: CertKey, wrapper: KeyWrapper, source: str, issuer: str,
    uid: str | None = None, extra: dict[str, Any] | None = None,
    source_ref: str | None = None,
) -> CertificateFields:
    """Store fields for a chain an issuer returned (already checked against key and names);
    the key sealed for ``uid``, ``extra`` recording which issuer made it."""
    uid = uid or uuid.uuid4().hex
    chain = x509.load_pem_x509_certificates(chain_pem)
    leaf, last = chain[0], chain[-1]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(n).lower() for n in sans.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    return CertificateFields(
        uid=uid, source=source, domains=tuple(names),
        chain_pem=chain_pem.decode("ascii"),
        key_sealed=wrapper.seal(private_key_pem(key), certificate_key_context(uid)),
        issuer=_common_name(leaf.issuer), subject=leaf.subject.rfc4514_string(),
        not_before=leaf.not_valid_before_utc, not_after=leaf.not_valid_after_utc,
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        key_type=key_type_name(key),
        # CA chains end at an intermediate whose root the client trusts; complete means
        # every certificate is followed by its issuer, down to one we cannot go past.
        chain_complete=len(chain) > 1 or last.issuer == last.subject,
        auto_renew=True, extra={**(extra or {}), ISSUED_BY: issuer}, source_ref=source_ref,
    )


def _current(txn: IStoreTransaction, demand: Demand) -> IssuanceState:
    state = txn.get_issuance_state(demand.key)
    if state is None:
        return IssuanceState(name=demand.key, names=demand.names, source=demand.source,
                             certificate_id=demand.certificate_id)
    return replace(state, names=demand.names, source=demand.source)


def certificate_of(txn: IStoreTransaction, state: IssuanceState) -> CertificateRecord | None:
    if state.certificate_id is None:
        return None
    try:
        return txn.get_certificate(state.certificate_id)
    except NotFound:
        return None


def begin_attempt(
    txn: IStoreTransaction, wrapper: KeyWrapper, demand: Demand, now: datetime,
    kind: KeyKind,
) -> tuple[CertKey, IssuanceState]:
    """Mark the set obtaining (or renewing, while a certificate exists); reuse the key of an
    order in flight, else make one."""
    state = _current(txn, demand)
    context = pending_order_key_context(demand.key)
    key: CertKey | None = None
    if state.pending_key_sealed is not None:
        try:
            loaded = load_private_key_pem(wrapper.open(state.pending_key_sealed, context))
        except (UnwrapError, ValueError):
            loaded = None
        if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            key = loaded
    sealed = state.pending_key_sealed
    if key is None:
        key = generate_private_key(kind)
        sealed = wrapper.seal(private_key_pem(key), context)
        state = replace(state, order_url=None)  # an order needs the key it was made with
    status = "renewing" if certificate_of(txn, state) is not None else "obtaining"
    state = replace(state, status=status, last_attempt_at=now, pending_key_sealed=sealed,
                    retired_at=None)
    txn.put_issuance_state(state)
    return key, state


def finish_success(
    txn: IStoreTransaction, wrapper: KeyWrapper, demand: Demand, issued: object,
    key: CertKey, issuer: str, renews_at: Any,
) -> tuple[IssuanceState, CertificateRecord, bool]:
    """Store the certificate (replacing the set's previous one in place, so hosts bound to
    it follow) and mark the set valid. ``renews_at(record)`` gives its renewal time.
    Returns the state, the record and whether it was a renewal."""
    chain_pem, source_ref = split_issued(issued)
    state = _current(txn, demand)
    previous = certificate_of(txn, state)
    if previous is not None:
        fields = issued_fields(chain_pem, key, wrapper, demand.source, issuer,
                               uid=previous.uid, extra=dict(previous.extra),
                               source_ref=source_ref or previous.source_ref)
        record = txn.replace_certificate(previous.id, fields)
    else:
        record = txn.add_certificate(
            issued_fields(chain_pem, key, wrapper, demand.source, issuer,
                          source_ref=source_ref))
    state = replace(
        state, status="valid", certificate_id=record.id, failures=0, last_error=None,
        next_attempt_at=None, renews_at=renews_at(record), issuer=issuer, order_url=None,
        pending_key_sealed=None, recent_failures=(),
    )
    txn.put_issuance_state(state)
    return state, record, previous is not None


def failed_state(
    state: IssuanceState, error: str, now: datetime, retry_intervals: Sequence[float],
    budget: FailureBudget, not_before: datetime | None = None,
) -> IssuanceState:
    """``state`` after one more failure: the backoff step, the failure budget's wait or the
    CA's, whichever is latest. A certificate obtained earlier keeps serving."""
    failures = state.failures + 1
    delay = retry_intervals[min(failures, len(retry_intervals)) - 1]
    next_attempt = now + timedelta(seconds=math.ceil(delay))
    recent = budget.recent((*state.recent_failures, now.replace(microsecond=0)), now)
    budget_wait = budget.earliest_attempt(recent, now)
    for later in (not_before, budget_wait):
        if later is not None:
            next_attempt = max(next_attempt, later)
    return replace(
        state, status="failed", failures=failures, last_error=error,
        next_attempt_at=ceil_second(next_attempt), recent_failures=recent,
    )


def finish_failure(
    txn: IStoreTransaction, demand: Demand, error: str, now: datetime,
    retry_intervals: Sequence[float], budget: FailureBudget, not_before: datetime | None,
) -> IssuanceState:
    state = failed_state(_current(txn, demand), error, now, retry_intervals, budget,
                         not_before)
    txn.put_issuance_state(state)
    return state


def retire(txn: IStoreTransaction, key: str, now: datetime) -> IssuanceState | None:
    """The set is no longer wanted: keep its row (the API shows it) and its certificate,
    but renew nothing and mark the certificate as not renewed (``auto_renew`` false)."""
    state = txn.get_issuance_state(key)
    if state is None or state.status == "retired":
        return state
    state = replace(state, status="retired", retired_at=now, order_url=None,
                    pending_key_sealed=None, next_attempt_at=None)
    txn.put_issuance_state(state)
    record = certificate_of(txn, state)
    if record is not None and record.auto_renew:
        txn.replace_certificate(record.id, replace(record.fields(), auto_renew=False))
    return state


def revive(txn: IStoreTransaction, demand: Demand) -> IssuanceState:
    """The set is wanted (again): a retired row comes back as valid (its certificate is
    renewed from now on) or wanted; a new row starts as wanted."""
    state = _current(txn, demand)
    if state.status != "retired" and txn.get_issuance_state(demand.key) is not None:
        return state
    record = certificate_of(txn, state)
    if record is not None:
        if not record.auto_renew:
            txn.replace_certificate(record.id, replace(record.fields(), auto_renew=True))
        # A stored certificate adopted for renewal (a source's demand rule) is renewed at
        # the lifetime rule, not at once, and keeps the identity of the issuer that made it.
        issued_by = record.extra.get(ISSUED_BY)
        state = replace(
            state, status="valid", retired_at=None,
            renews_at=state.renews_at or ceil_second(
                lifetime_renewal_time(record.not_before, record.not_after)),
            issuer=state.issuer or (issued_by if isinstance(issued_by, str) else None))
    else:
        state = replace(state, status="wanted", retired_at=None, certificate_id=None)
    txn.put_issuance_state(state)
    return state


def reset(txn: IStoreTransaction, key: str, keep_budget: bool = False) -> IssuanceState | None:
    """Forget the backoff (an operator's "retry now", or the certificate was deleted by
    force): the next attempt may start at once. ``keep_budget`` keeps the recent failures,
    so the CA's failed-validation limit still holds (a retry); a deleted certificate's
    reset forgets them too."""
    state = txn.get_issuance_state(key)
    if state is None:
        return None
    if certificate_of(txn, state) is None:
        state = replace(state, certificate_id=None)
    recent = state.recent_failures if keep_budget else ()
    state = replace(state, failures=0, next_attempt_at=None, recent_failures=recent,
                    renews_at=None if state.certificate_id is None else state.renews_at)
    if state.status == "failed":
        state = replace(state, status="wanted" if state.certificate_id is None else "valid")
    txn.put_issuance_state(state)
    return state


def reschedule(
    txn: IStoreTransaction, key: str, certificate_id: int | None, renews_at: datetime,
) -> IssuanceState | None:
    """Move the renewal time of a valid set (the CA's window moved), unless the set has
    changed meanwhile (another certificate, or no longer valid): then nothing."""
    state = txn.get_issuance_state(key)
    if state is None or state.status != "valid" or state.certificate_id != certificate_id:
        return None
    state = replace(state, renews_at=renews_at)
    txn.put_issuance_state(state)
    return state


__all__ = [
    "ISSUED_BY",
    "IssuedChain",
    "begin_attempt",
    "certificate_of",
    "failed_state",
    "finish_failure",
    "finish_success",
    "issued_fields",
    "reschedule",
    "reset",
    "retire",
    "revive",
    "split_issued",
]
