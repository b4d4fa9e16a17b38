"""What ``/api/v1/health`` and ``/api/v1/alerts/banner`` answer, from the monitor's memory.

Health without a token says only what a load balancer or ``systemctl`` needs and nothing
an outsider could use: whether each listener is up, whether the store answers and takes
writes, how many certificates are in each level and how many automatic names are failing,
and the *name* of the last renewal error (an exception type such as ``AcmeError``, never
its text). It is ``503`` when a listener is down, the store does not answer or refuses
writes, or a certificate a host uses (bound to it, or covering its names) has expired;
``200`` otherwise (``status`` then says ``ok``, ``warning`` or ``critical``). The verbose
form (token required) adds every certificate and every failing name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aegis.monitor.evaluate import certificate_details
from aegis.monitor.levels import EXPIRED, LEVELS, OK, worst
from aegis.monitor.monitor import ExpiryMonitor
from aegis.timefmt import to_text


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def failing_states(monitor: ExpiryMonitor) -> list[Any]:
    """The lifecycle states whose last attempt failed (not retired)."""
    if monitor.lifecycle is None:
        return []
    return [s for s in monitor.lifecycle.states() if s.status == "failed" or (
        s.failures > 0 and s.status != "retired")]


def health(monitor: ExpiryMonitor, store_answers: bool,
           verbose: bool) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)``; see the module docstring."""
    evaluation = monitor.evaluation
    counts = dict.fromkeys(LEVELS, 0)
    expired_serving = 0
    for subject, assessment in evaluation.assessments.items():
        watched = evaluation.watched[subject]
        if watched.retired:
            continue
        counts[assessment.level] += 1
        if assessment.level == EXPIRED and monitor.in_use(watched):
            expired_serving += 1
    failing = failing_states(monitor)
    listeners = {name: bool(up()) for name, up in sorted(monitor.listeners.items())}
    writable = monitor.store_ok is not False
    problems = []
    if not all(listeners.values()):
        problems.append("listener_down")
    if not store_answers:
        problems.append("store_unreachable")
    elif not writable:
        problems.append("store_read_only")
    if expired_serving:
        problems.append("certificate_expired")
    levels = [level for level, count in counts.items() if count and level != EXPIRED]
    level = worst(levels + (["warning"] if failing else []))
    status = "critical" if problems else level
    error = monitor.last_renewal_error
    body: dict[str, Any] = {
        "status": status,
        "problems": problems,
        "listeners": listeners,
        "store": {"reachable": store_answers, "writable": writable},
        "certificates": {"total": sum(counts.values()), **counts,
                         "expiring": counts["warning"] + counts["critical"],
                         "expired_in_use": expired_serving, "failing": len(failing)},
        "last_renewal_error": None if error is None else error[0],
        "last_renewal_error_at": None if error is None else to_text(error[1]),
        "last_clock_jump": (None if monitor.last_clock_jump is None
                            else to_text(monitor.last_clock_jump[0])),
        "checked_at": to_text(monitor.now()),
    }
    if verbose:
        body["detail"] = {
            "certificates": certificate_rows(monitor),
            "failing": [_failing_row(state) for state in failing],
            "alert_channels": {label: {"last_error": stats.last_error,
                                       "delivered": sum(stats.delivered.values()),
                                       "given_up": sum(stats.failed.values())}
                               for label, stats in sorted(monitor.dispatcher.stats.items())},
            "store_error": monitor.store_error,
        }
    return (503 if problems else 200), body


def certificate_rows(monitor: ExpiryMonitor) -> list[dict[str, Any]]:
    evaluation = monitor.evaluation
    rows = []
    for subject in sorted(evaluation.assessments):
        watched = evaluation.watched[subject]
        details = certificate_details(watched, evaluation.assessments[subject],
                                      evaluation.serving.get(watched.certificate_id or -1, []))
        rows.append({"subject": subject, "retired": watched.retired,
                     **{k: _stamp(v) if isinstance(v, datetime) else v
                        for k, v in details.items()}})
    return rows


def _failing_row(state: Any) -> dict[str, Any]:
    return {"name": state.name, "names": list(state.ordered_names), "source": state.source,
            "failures": state.failures, "last_error": state.last_error,
            "last_attempt_at": _stamp(state.last_attempt_at),
            "next_attempt_at": _stamp(state.next_attempt_at)}


def banner(monitor: ExpiryMonitor) -> dict[str, Any]:
    """What the UI shows on top: each problem, since when, and the next try."""
    items: list[dict[str, Any]] = []
    for state in failing_states(monitor):
        since = monitor.ledger.streaks.get(state.name)
        items.append({"kind": "renewal_failing", "level": "warning", "subject": state.name,
                      "names": list(state.ordered_names), "source": state.source,
                      "message": f"renewal failed {state.failures} times: {state.last_error}",
                      "since": since or _stamp(state.last_attempt_at),
                      "next_attempt_at": _stamp(state.next_attempt_at)})
    evaluation = monitor.evaluation
    for subject in sorted(evaluation.assessments):
        assessment, watched = evaluation.assessments[subject], evaluation.watched[subject]
        if assessment.level == OK or watched.retired:
            continue
        items.append({"kind": assessment.reason, "level": assessment.level,
                      "subject": subject, "names": list(watched.names),
                      "source": watched.source, "certificate_id": watched.certificate_id,
                      "message": f"{assessment.level}: {assessment.reason.replace('_', ' ')}",
                      "since": _stamp(monitor.level_since.get(subject)),
                      "not_after": to_text(watched.not_after),
                      "next_attempt_at": _stamp(watched.next_attempt_at)})
    if monitor.store_ok is False:
        items.append({"kind": "store_failing", "level": "critical", "subject": "store",
                      "names": [], "source": None,
                      "message": f"the store refuses writes ({monitor.store_error})",
                      "since": monitor.ledger.store_failing_since, "next_attempt_at": None})
    level = worst([item["level"] for item in items])
    return {"level": level, "count": len(items), "items": items}


__all__ = ["banner", "certificate_rows", "failing_states", "health"]
