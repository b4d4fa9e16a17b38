"""One evaluation pass: every watched certificate's level, and the alerts its changes make.

Pure (no I/O, no clock): the monitor hands in what it read and the ledger, and gets back
the assessments, the alerts to send (already recorded in the ledger, so each transition
alerts once) and when to look again. Which host names each certificate serves is worked out
here too, from the SNI selection table — "serving" is what makes a deletion or retirement
alarming.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aegis.monitor import alerts
from aegis.monitor.alerts import Alert, AlertLedger, transition_key
from aegis.monitor.inventory import Watched
from aegis.monitor.levels import OK, SEVERITY, Assessment, Thresholds, assess
from aegis.timefmt import to_text
from aegis.tls.selection import SelectionTable

SEVERITY_OF_LEVEL = {"ok": "info", "warning": "warning", "critical": "critical",
                     "expired": "critical"}


@dataclass
class Evaluation:
    """What one pass found."""

    assessments: dict[str, Assessment] = field(default_factory=dict)
    watched: dict[str, Watched] = field(default_factory=dict)
    serving: dict[int, list[str]] = field(default_factory=dict)  # certificate id -> names
    steps: dict[int, str] = field(default_factory=dict)  # certificate id -> selection step
    alerts: list[Alert] = field(default_factory=list)
    changes: list[tuple[Watched, str, str, Assessment]] = field(default_factory=list)
    next_change: datetime | None = None


def certificate_details(watched: Watched, assessment: Assessment | None = None,
                        serving: Sequence[str] = ()) -> dict[str, object]:
    """The public facts of a certificate, as alerts, the banner and the health detail show
    them."""
    details: dict[str, object] = {
        "certificate_id": watched.certificate_id, "source": watched.source,
        "issuer": watched.issuer, "names": list(watched.names),
        "not_after": watched.not_after, "renews_at": watched.renews_at,
        "renewed_by_aegis": watched.managed is not None, "failures": watched.failures,
        "serving": list(serving),
    }
    if assessment is not None:
        details.update(level=assessment.level, reason=assessment.reason)
    if watched.last_error is not None:
        details["last_error"] = watched.last_error
    if watched.next_attempt_at is not None:
        details["next_attempt_at"] = watched.next_attempt_at
    return details


def serving_map(table: SelectionTable | None, host_names: Iterable[str], now: datetime
                ) -> tuple[dict[int, list[str]], dict[int, str], datetime | None]:
    """Which stored certificate each host name gets right now, by which step, and the
    first moment one of them expires (the answer holds until then)."""
    serving: dict[int, list[str]] = {}
    steps: dict[int, str] = {}
    until: datetime | None = None
    if table is None:
        return serving, steps, until
    for name in host_names:
        if name.startswith("*."):
            continue
        chosen = table.select(name, now)
        certificate = chosen.certificate
        if certificate.id is not None:
            serving.setdefault(certificate.id, []).append(name)
            steps.setdefault(certificate.id, chosen.step)
        if until is None or certificate.not_after < until:
            until = certificate.not_after
    return serving, steps, until


def _summary(kind: str, watched: Watched, assessment: Assessment) -> str:
    names = ", ".join(watched.names[:3]) + (" ..." if len(watched.names) > 3 else "")
    what = f"certificate {watched.subject} ({names})"
    if kind == alerts.EXPIRED:
        return f"{what} has expired"
    if assessment.reason == "renewal_overdue":
        return f"{what}: renewal is overdue ({assessment.level})"
    if assessment.reason == "renewal_failing":
        return f"{what}: renewal failed {watched.failures} times ({assessment.level})"
    return f"{what} expires soon ({assessment.level})"


def evaluate(
    ledger: AlertLedger,
    watched: Sequence[Watched],
    now: datetime,
    thresholds: Thresholds,
    serving: Mapping[int, list[str]],
    steps: Mapping[int, str],
    previous: Evaluation | None = None,
) -> Evaluation:
    """Assess every certificate; record and return the alerts of level changes.

    An item equal to its ``previous`` pass whose level cannot have changed by time yet
    keeps its assessment (a level depends only on the item and the time): most passes
    touch one certificate of many.
    """
    result = Evaluation(serving=dict(serving), steps=dict(steps))
    before_items = previous.watched if previous is not None else {}
    before_levels = previous.assessments if previous is not None else {}
    for item in watched:
        subject = item.subject
        assessment = before_levels.get(subject)
        unchanged = assessment is not None and before_items.get(subject) == item and (
            assessment.changes_at is None or now < assessment.changes_at)
        if not unchanged or assessment is None:
            assessment = assess(item.not_before, item.not_after, now, thresholds,
                                item.renews_at, item.failures)
            _level_change(ledger, item, assessment, now, result)
        result.assessments[subject] = assessment
        result.watched[subject] = item
        if assessment.changes_at is not None and (
            result.next_change is None or assessment.changes_at < result.next_change
        ):
            result.next_change = assessment.changes_at
    for subject in [s for s in ledger.levels if s not in result.watched]:
        ledger.forget(subject)
    return result


def _level_change(ledger: AlertLedger, item: Watched, assessment: Assessment,
                  now: datetime, result: Evaluation) -> None:
    before = ledger.levels.get(item.subject)
    same_certificate = before is not None and before[1] == int(item.not_after.timestamp())
    previous = before[0] if before is not None and same_certificate else OK
    ledger.set_level(item.subject, assessment.level, item.not_after)
    if assessment.level == previous:
        return
    result.changes.append((item, previous, assessment.level, assessment))
    if SEVERITY[assessment.level] <= SEVERITY[previous] or item.retired:
        return
    kind = alerts.LEVEL_ALERTS[assessment.level]
    key = transition_key(kind, item.subject, to_text(item.not_after), item.fingerprint)
    if ledger.was_sent(key):
        return
    serving = result.serving.get(item.certificate_id or -1, [])
    alert = Alert(kind=kind, key=key, at=now, severity=SEVERITY_OF_LEVEL[assessment.level],
                  subject=item.subject, summary=_summary(kind, item, assessment),
                  details=certificate_details(item, assessment, serving))
    ledger.record(alert)
    result.alerts.append(alert)


__all__ = ["Evaluation", "certificate_details", "evaluate", "serving_map"]
