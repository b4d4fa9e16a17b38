"""When a certificate is renewed: the lifetime rule, or the window its CA suggests.

The lifetime rule (certmagic's, and Let's Encrypt's advice): renew once a third of the
lifetime remains (30 days for a 90-day certificate, 15 for 45 days); for lifetimes under 10
days (Let's Encrypt's 6-day "shortlived" profile) once half remains, so a failed renewal
still leaves three days to retry. A CA that suggests a window (ACME ARI, RFC 9773) wins: the
renewal time is a uniformly random point inside it, as the RFC asks, so renewals of many
certificates do not arrive at the CA at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

SHORT_LIFETIME = timedelta(days=10)


@dataclass(frozen=True)
class RenewalAdvice:
    """A CA's current suggestion for one certificate (ACME ARI) and when to ask again.

    ``window`` None means the CA suggests nothing (the lifetime rule applies);
    ``next_check`` is always set, so a CA that starts suggesting later is noticed, and a
    window the CA moves (earlier, for a revocation) is seen by then.
    """

    window: tuple[datetime, datetime] | None
    next_check: datetime
    explanation_url: str | None = None


def ceil_second(moment: datetime) -> datetime:
    """Stored times have whole seconds: round up so nothing happens *before* a deadline."""
    if moment.microsecond:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def lifetime_renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """A third of the lifetime left; half of it for lifetimes under 10 days."""
    lifetime = not_after - not_before
    share = 2 if lifetime < SHORT_LIFETIME else 3
    return not_after - lifetime / share


def renewal_time(
    not_before: datetime,
    not_after: datetime,
    window: Any = None,
    rand: Callable[[], float] = random.random,
) -> datetime:
    """When to renew: a random point of the CA's ``window`` (start, end), else the rule."""
    if window is not None:
        start, end = window
        if isinstance(start, datetime) and isinstance(end, datetime) and start <= end:
            return ceil_second(start + (end - start) * rand())
    return ceil_second(lifetime_renewal_time(not_before, not_after))


__all__ = ["SHORT_LIFETIME", "RenewalAdvice", "ceil_second", "lifetime_renewal_time",
           "renewal_time"]
