"""How close to trouble one certificate is: ``ok``, ``warning``, ``critical`` or ``expired``.

Why relative thresholds: fixed day counts misfire for short lifetimes (a "warn at 30 days"
rule is permanently red for a 6-day certificate, Traefik #12946) and fire far too late to
matter for none. So:

* **Certificates Aegis renews** (the lifecycle engine holds a state for them): the renewal
  has a planned time. ``warning`` once it is overdue — past the planned time plus a margin
  (``renewal_margin``, at most 5% of the lifetime) — or once it failed ``failures`` times in
  a row; ``critical`` once half of what was left at that overdue point is gone too (a
  90-day certificate renewed at 30 days left: critical at about 15 days left, a 6-day one at
  about 1.4 days).
* **Manual certificates** (uploads, Cloudflare Origin without automatic renewal, the local
  CA): ``warning`` at the smaller of ``warning_days`` and ``warning_fraction`` of the
  lifetime left (30 days, a third), ``critical`` at the smaller of ``critical_days`` and
  ``critical_fraction`` (7 days, a tenth). The manual critical rule also holds for renewed
  certificates, whatever their schedule says.
* ``expired`` from ``not_after`` on.

:func:`assess` also says when the answer can next change, so the monitor wakes exactly then
instead of polling every certificate every minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

OK = "ok"
WARNING = "warning"
CRITICAL = "critical"
EXPIRED = "expired"
LEVELS = (OK, WARNING, CRITICAL, EXPIRED)
SEVERITY = {level: rank for rank, level in enumerate(LEVELS)}


@dataclass(frozen=True)
class Thresholds:
    """The configurable rules above (``AEGIS_MONITOR_*`` settings)."""

    warning_days: float = 30.0
    warning_fraction: float = 1 / 3
    critical_days: float = 7.0
    critical_fraction: float = 0.1
    renewal_margin: float = 86400.0  # seconds past the planned renewal before "overdue"
    failures: int = 3  # consecutive failed renewals that make a warning

    def warning_before(self, lifetime: timedelta) -> timedelta:
        return min(timedelta(days=self.warning_days), lifetime * self.warning_fraction)

    def critical_before(self, lifetime: timedelta) -> timedelta:
        return min(timedelta(days=self.critical_days), lifetime * self.critical_fraction)

    def margin(self, lifetime: timedelta) -> timedelta:
        return min(timedelta(seconds=self.renewal_margin), lifetime * 0.05)


class Assessment(NamedTuple):
    """A level, why (a stable code), and the moment it may change (None: not by time)."""

    level: str
    reason: str
    changes_at: datetime | None


def assess(
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    thresholds: Thresholds,
    renews_at: datetime | None = None,
    failures: int = 0,
) -> Assessment:
    """The level of a certificate valid ``not_before``..``not_after`` at ``now``.

    ``renews_at`` is the planned renewal of a certificate Aegis renews (None: manual);
    ``failures`` its consecutive failed attempts.
    """
    if now >= not_after:
        return Assessment(EXPIRED, "expired", None)
    lifetime = max(not_after - not_before, timedelta(seconds=1))
    critical_at = not_after - thresholds.critical_before(lifetime)
    if now >= critical_at:
        return Assessment(CRITICAL, "expires_soon", not_after)
    if renews_at is None:
        warning_at = not_after - thresholds.warning_before(lifetime)
        if now >= warning_at:
            return Assessment(WARNING, "expires_soon", critical_at)
        return Assessment(OK, "valid", warning_at)
    overdue_at = renews_at + thresholds.margin(lifetime)
    late_at = min(overdue_at + (not_after - overdue_at) / 2, critical_at)
    if now >= late_at and now >= overdue_at:
        return Assessment(CRITICAL, "renewal_overdue", critical_at)
    if now >= overdue_at:
        return Assessment(WARNING, "renewal_overdue", late_at)
    if failures >= thresholds.failures:
        return Assessment(WARNING, "renewal_failing", overdue_at)
    return Assessment(OK, "valid", overdue_at)


def worst(levels: list[str]) -> str:
    """The most severe of ``levels`` (``ok`` for none)."""
    return max(levels, key=SEVERITY.__getitem__, default=OK)


__all__ = ["CRITICAL", "EXPIRED", "LEVELS", "OK", "SEVERITY", "WARNING", "Assessment",
           "Thresholds", "assess", "worst"]
