"""The alerts the monitor raises besides level changes, built from the facts at hand.

One function per kind, each deriving the transition's idempotency key from what makes the
transition unique (the streak's start, the outage's start, the certificate's fingerprint),
so the same transition always gets the same key — across checks and across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aegis.monitor import alerts
from aegis.monitor.alerts import Alert, transition_key
from aegis.monitor.inventory import Watched
from aegis.timefmt import to_text

_EVENT_FACTS = ("name", "source", "failures", "reason", "error", "next_attempt_at",
                "certificate_id", "names", "not_after", "renews_at")


def event_details(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The public facts of a lifecycle event worth repeating in an alert."""
    return {key: fields[key] for key in _EVENT_FACTS if key in fields}


def renewal_failed(key: str, since: str, at: datetime, fields: Mapping[str, Any]) -> Alert:
    return Alert(kind=alerts.RENEWAL_FAILED, key=transition_key("failed", key, since), at=at,
                 severity="warning", subject=key,
                 summary=f"renewal of {key} failed: {fields.get('reason')}",
                 details=event_details(fields))


def renewal_recovered(key: str, since: str, at: datetime,
                      fields: Mapping[str, Any]) -> Alert:
    return Alert(kind=alerts.RENEWAL_RECOVERED, key=transition_key("recovered", key, since),
                 at=at, severity="info", subject=key,
                 summary=f"{key} has a certificate again (failing since {since})",
                 details={**event_details(fields), "failing_since": since})


def gone_while_serving(kind: str, old: Watched, served: list[str], at: datetime) -> Alert:
    verb = "retired" if kind == alerts.RETIRED_WHILE_SERVING else "deleted"
    return Alert(kind=kind, key=transition_key(kind, old.subject, old.fingerprint), at=at,
                 severity="warning", subject=old.subject,
                 summary=f"certificate {old.subject} was {verb} while serving "
                 f"{', '.join(served[:3])}",
                 details={"certificate_id": old.certificate_id, "source": old.source,
                          "names": list(old.names), "serving": served,
                          "not_after": to_text(old.not_after)})


def store_failing(at: datetime, error: str | None) -> Alert:
    return Alert(kind=alerts.STORE_FAILING, key=transition_key("store", to_text(at)), at=at,
                 severity="critical", subject="store",
                 summary=f"the store refuses writes ({error}): renewals cannot be recorded",
                 details={"error": error})


def store_recovered(at: datetime, since: str) -> Alert:
    return Alert(kind=alerts.STORE_RECOVERED, key=transition_key("store-ok", since), at=at,
                 severity="info", subject="store", summary="the store takes writes again",
                 details={"failing_since": since})


def clock_jumped(last: datetime, now: datetime) -> Alert:
    gap = (now - last).total_seconds()
    return Alert(kind=alerts.CLOCK_JUMPED,
                 key=transition_key("jump", to_text(last), to_text(now)), at=now,
                 severity="warning", subject="clock",
                 summary=f"the clock jumped forward {gap / 3600:.1f} hours "
                 f"(from {to_text(last)})",
                 details={"from": to_text(last), "to": to_text(now), "seconds": int(gap)})


__all__ = ["clock_jumped", "event_details", "gone_while_serving", "renewal_failed",
           "renewal_recovered", "store_failing", "store_recovered"]
