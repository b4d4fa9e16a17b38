"""The certificate object of the API, built from a stored record (public facts only).

The spec's fields come first and keep their names exactly: ``id``, ``domains``, ``source``,
``issuer``, ``expires_at`` (ISO 8601 UTC with ``Z``), ``auto_renew``, ``created_at``. The
extras never hold a secret: ``not_before``, ``fingerprint_sha256``, ``key_type``,
``chain_complete``, ``days_remaining``, ``status``, ``hosts``, ``problem`` (why the
registry does not serve it, e.g. a key that no longer decrypts, else null), ``lifecycle``
and ``retired``. ``chain_pem`` (the public chain, leaf first) only on request: it is large
and lists do not need it.

``hosts`` lists every host the certificate serves and how: ``{id, domain, names, step}``,
``step`` being the SNI selection step (``host_binding``, ``domain_match``, ``autocert``; see
:mod:`aegis.certs.usage`). ``lifecycle`` is where the lifecycle engine stands with the
certificate (null when Aegis manages it not at all): ``{key, status, renews_at,
next_attempt_at, last_error}``; ``retired`` is true once no host wants it any more (kept,
served where it still matches, never renewed).

The record's ``key_sealed`` is never read here, so no form of the key can reach a response.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from aegis.certs.index import Problem
from aegis.certs.usage import HostUse
from aegis.store.records import CertificateRecord, IssuanceState
from aegis.timefmt import to_text

EXPIRING_WITHIN = timedelta(days=30)


iso = to_text  # the certificate object's timestamps: one format everywhere (aegis.timefmt)


def status(not_before: datetime, not_after: datetime, now: datetime) -> str:
    """``valid``, ``expiring`` (under 30 days left), ``expired`` or ``not_yet_valid``."""
    if now >= not_after:
        return "expired"
    if now < not_before:
        return "not_yet_valid"
    if not_after - now < EXPIRING_WITHIN:
        return "expiring"
    return "valid"


def days_remaining(not_after: datetime, now: datetime) -> int:
    """Whole days left (rounded down), 0 once expired."""
    return max(0, math.floor((not_after - now) / timedelta(days=1)))


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def lifecycle_object(state: IssuanceState | None) -> dict[str, Any] | None:
    """The certificate object's ``lifecycle`` (public facts only: never the pending key)."""
    if state is None:
        return None
    return {"key": state.name, "status": state.status, "renews_at": _stamp(state.renews_at),
            "next_attempt_at": _stamp(state.next_attempt_at), "last_error": state.last_error}


def certificate_object(
    record: CertificateRecord,
    hosts: Sequence[HostUse],
    now: datetime,
    problem: Problem | None = None,
    include_chain: bool = False,
    lifecycle: IssuanceState | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.id,
        "domains": list(record.domains),
        "source": record.source,
        "issuer": record.issuer,
        "expires_at": iso(record.not_after),
        "auto_renew": record.auto_renew,
        "created_at": iso(record.created_at),
        "not_before": iso(record.not_before),
        "subject": record.subject,
        "fingerprint_sha256": record.fingerprint_sha256,
        "key_type": record.key_type,
        "chain_complete": record.chain_complete,
        "days_remaining": days_remaining(record.not_after, now),
        "status": status(record.not_before, record.not_after, now),
        "hosts": [use.public() for use in hosts],
        "problem": (
            None if problem is None else {"code": problem.reason, "message": problem.message}
        ),
        "lifecycle": lifecycle_object(lifecycle),
        "retired": lifecycle is not None and lifecycle.status == "retired",
    }
    if include_chain:
        body["chain_pem"] = record.chain_pem
    return body
