"""Alerts: what is sent when a certificate (or the store) changes for the worse or better,
and the ledger that remembers what was sent, in the store, across restarts.

Every alert belongs to one *transition* and carries its idempotency ``key``, derived from
what identifies the transition (the subject, the kind, and the certificate's ``not_after``
or the failure streak's start). The ledger keeps the keys sent (the most recent
:data:`LEDGER_KEYS`), the last level of each subject and the open failure streaks, as one
JSON settings row (:data:`LEDGER_SETTING`), so a restart neither repeats an alert nor
forgets that a certificate was already in ``warning``. Receivers can also deduplicate on the
``Idempotency-Key`` header.

Payloads carry public facts only: ids, names, sources, dates, error texts the lifecycle
already cut for operators. Never a key, token, password or webhook URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aegis.timefmt import to_text

LEDGER_SETTING = "monitor_alert_ledger"
LEDGER_KEYS = 5000

WARNING_ENTERED = "certificate_warning"
CRITICAL_ENTERED = "certificate_critical"
EXPIRED = "certificate_expired"
RENEWAL_FAILED = "renewal_failed"
RENEWAL_RECOVERED = "renewal_recovered"
DELETED_WHILE_SERVING = "certificate_deleted"
RETIRED_WHILE_SERVING = "certificate_retired"
STORE_FAILING = "store_failing"
STORE_RECOVERED = "store_recovered"
CLOCK_JUMPED = "clock_jumped"
TEST = "test"
KINDS = (WARNING_ENTERED, CRITICAL_ENTERED, EXPIRED, RENEWAL_FAILED, RENEWAL_RECOVERED,
         DELETED_WHILE_SERVING, RETIRED_WHILE_SERVING, STORE_FAILING, STORE_RECOVERED,
         CLOCK_JUMPED, TEST)
LEVEL_ALERTS = {"warning": WARNING_ENTERED, "critical": CRITICAL_ENTERED, "expired": EXPIRED}


def transition_key(*parts: object) -> str:
    """A stable idempotency key for one transition (32 hex characters)."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_text(value)
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Alert:
    """One alert. ``severity`` is ``info``, ``warning`` or ``critical``; ``summary`` one line
    for people (the e-mail subject); ``details`` the facts (JSON-serialisable after
    :func:`_jsonable`)."""

    kind: str
    key: str
    at: datetime
    severity: str
    subject: str
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def payload(self) -> dict[str, Any]:
        """The webhook body (and the e-mail's facts)."""
        return {"id": self.key, "kind": self.kind, "severity": self.severity,
                "subject": self.subject, "summary": self.summary, "at": to_text(self.at),
                "details": _jsonable(self.details), "source": "aegis"}

    def body(self) -> bytes:
        """The exact bytes POSTed (and signed)."""
        return json.dumps(self.payload(), sort_keys=True, separators=(",", ":")).encode()


class AlertLedger:
    """What was sent, the last level per subject, open failure streaks (see module doc)."""

    def __init__(self) -> None:
        self.sent: dict[str, str] = {}  # key -> kind, oldest first
        self.levels: dict[str, tuple[str, int]] = {}  # subject -> (level, not_after epoch)
        self.streaks: dict[str, str] = {}  # lifecycle key -> first failure (text)
        self.store_failing_since: str | None = None
        self.dirty = False

    def was_sent(self, key: str) -> bool:
        return key in self.sent

    def record(self, alert: Alert) -> None:
        self.sent[alert.key] = alert.kind
        while len(self.sent) > LEDGER_KEYS:
            del self.sent[next(iter(self.sent))]
        self.dirty = True

    def set_level(self, subject: str, level: str, not_after: datetime) -> None:
        value = (level, int(not_after.timestamp()))
        if self.levels.get(subject) != value:
            self.levels[subject] = value
            self.dirty = True

    def forget(self, subject: str) -> None:
        if self.levels.pop(subject, None) is not None:
            self.dirty = True

    def merge(self, newer: AlertLedger) -> None:
        """Take in what ``newer`` (kept in memory before this one was read) recorded."""
        for key, kind in newer.sent.items():
            self.sent[key] = kind
        self.levels.update(newer.levels)
        self.streaks.update(newer.streaks)
        self.store_failing_since = newer.store_failing_since or self.store_failing_since
        self.dirty = self.dirty or newer.dirty

    def to_json(self) -> str:
        return json.dumps({"sent": self.sent, "levels": self.levels, "streaks": self.streaks,
                           "store_failing_since": self.store_failing_since},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> AlertLedger:
        """The ledger from its settings row; an unreadable row starts empty (logged by the
        caller), because a monitor that refuses to start helps nobody."""
        ledger = cls()
        if not text:
            return ledger
        data = json.loads(text)
        ledger.sent = {str(k): str(v) for k, v in dict(data.get("sent", {})).items()}
        ledger.levels = {str(k): (str(v[0]), int(v[1]))
                         for k, v in dict(data.get("levels", {})).items()}
        ledger.streaks = {str(k): str(v) for k, v in dict(data.get("streaks", {})).items()}
        since = data.get("store_failing_since")
        ledger.store_failing_since = None if since is None else str(since)
        return ledger


__all__ = ["CLOCK_JUMPED", "CRITICAL_ENTERED", "DELETED_WHILE_SERVING", "EXPIRED", "KINDS",
           "LEDGER_KEYS", "LEDGER_SETTING", "LEVEL_ALERTS", "RENEWAL_FAILED", "RENEWAL_RECOVERED",
           "RETIRED_WHILE_SERVING", "STORE_FAILING", "STORE_RECOVERED", "TEST",
           "WARNING_ENTERED", "Alert", "AlertLedger", "transition_key"]
