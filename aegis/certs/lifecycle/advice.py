"""CA renewal advice (ACME ARI) for the lifecycle engine: when to ask, and what it changes.

An issuer that provides :class:`aegis.interfaces.IRenewalAdvisor` is asked about every
valid certificate it made: once right after issuance (or after a restart), then again at
the time its last answer named (``Retry-After``, kept between a minute and a day). The
renewal time is a random point of the suggested window, drawn once per window: asking
again and getting the same window keeps the time, so daily checks do not drift it early;
a window that moves (a CA about to revoke moves it into the past) draws a new point, and a
point in the past means "renew now". A window that ended before the certificate began
is ignored (the lifetime rule holds): it cannot be about this certificate, and following
it would renew a fresh certificate again and again.

What is remembered lives in memory: after a restart each certificate is asked about once
more, which costs one unauthenticated GET per certificate within the CA's request budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from aegis.certs.lifecycle.policy import RenewalAdvice, renewal_time

#: After a failed lookup (network, CA error) ask again this much later; the renewal time
#: already scheduled (the lifetime rule's, or an earlier window's) holds meanwhile.
RETRY_AFTER_FAILURE = timedelta(hours=1)


class AdviceBook:
    """Per managed set: when to ask next, the window its renewal time came from, and
    which lookups are running (one per set at a time)."""

    def __init__(self, rand: Callable[[], float] = random.random) -> None:
        self._rand = rand
        self._next: dict[str, datetime] = {}
        self._windows: dict[str, tuple[datetime, datetime]] = {}
        self.running: set[str] = set()
        self.lookups = 0

    def forget(self, key: str) -> None:
        """A new certificate (or none): ask about it at once, draw afresh."""
        self._next.pop(key, None)
        self._windows.pop(key, None)

    def next_check(self, key: str, now: datetime) -> datetime:
        return self._next.get(key, now)

    def window(self, key: str) -> tuple[datetime, datetime] | None:
        return self._windows.get(key)

    def failed(self, key: str, now: datetime) -> None:
        self._next[key] = now + RETRY_AFTER_FAILURE

    def advised(self, key: str, advice: RenewalAdvice, current: datetime | None,
                not_before: datetime) -> datetime | None:
        """Record ``advice`` about a certificate valid from ``not_before``; the new
        renewal time, or None to keep ``current``."""
        self._next[key] = advice.next_check
        if advice.window is None or advice.window[1] < not_before:
            self._windows.pop(key, None)
            return None
        start, end = advice.window
        if self._windows.get(key) == advice.window and current is not None:
            return None
        self._windows[key] = advice.window
        return renewal_time(start, end, advice.window, self._rand)


__all__ = ["RETRY_AFTER_FAILURE", "AdviceBook"]
