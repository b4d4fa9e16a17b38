"""The limits the engine keeps towards each CA: a request rate and a failed-validation budget.

Why: without them, 30-60 hosts created at once sent 200-300 ACME requests per second, and a
name whose validation kept failing burnt about nine authorisations in its first hour —
Let's Encrypt allows 5 failed authorisations per identifier per account per hour and 20
requests per second per client on its API. Defaults (docs/lifecycle.md):

* :class:`RequestBudget`: 10 requests per second per CA, bursts of 10 — one order takes 8-12
  requests, so 60 new hosts are served in about a minute;
* :class:`FailureBudget`: at most 3 failed attempts per name within an hour; the next attempt
  waits until the oldest of them is an hour old.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

REQUESTS_PER_SECOND = 10.0
REQUEST_BURST = 10
FAILURES_PER_WINDOW = 3
FAILURE_WINDOW = timedelta(hours=1)


class RequestBudget:
    """A token bucket: :meth:`take` fires when the caller may send its next request.

    Waiters are served in order; cancelling a waiting Deferred gives its place up.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float = REQUESTS_PER_SECOND,
        burst: int = REQUEST_BURST,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a request budget needs a positive rate and burst")
        self._clock = clock
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = clock.seconds()
        self._waiting: deque[Deferred[None]] = deque()
        self._timer: IDelayedCall | None = None
        self.granted = 0

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self) -> Deferred[None]:
        """A Deferred that fires (with None) once a request may go out."""
        waiter: Deferred[None] = Deferred(lambda d: self._cancel(d))
        self._waiting.append(waiter)
        self._serve()
        return waiter

    def _cancel(self, waiter: Deferred[None]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)

    def _serve(self) -> None:
        self._refill()
        while self._waiting and self._tokens >= 1.0:
            self._tokens -= 1.0
            self.granted += 1
            self._waiting.popleft().callback(None)
        if self._waiting and (self._timer is None or not self._timer.active()):
            delay = (1.0 - self._tokens) / self._rate
            self._timer = self._clock.callLater(max(delay, 0.001), self._wake)

    def _wake(self) -> None:
        self._timer = None
        self._serve()


class FailureBudget:
    """How many failed attempts a name may have within ``window`` before it must wait."""

    def __init__(self, limit: int = FAILURES_PER_WINDOW,
                 window: timedelta = FAILURE_WINDOW) -> None:
        if limit < 1:
            raise ValueError("a failure budget needs a limit of at least 1")
        self.limit = limit
        self.window = window

    def recent(self, failures: Sequence[datetime], now: datetime) -> tuple[datetime, ...]:
        """The failures still inside the window at ``now``, oldest first."""
        return tuple(sorted(moment for moment in failures if now - moment < self.window))

    def earliest_attempt(self, failures: Sequence[datetime], now: datetime) -> datetime | None:
        """When the next attempt may start (None: at once, the budget is not spent)."""
        recent = self.recent(failures, now)
        if len(recent) < self.limit:
            return None
        return recent[len(recent) - self.limit] + self.window


__all__ = [
    "FAILURES_PER_WINDOW",
    "FAILURE_WINDOW",
    "REQUESTS_PER_SECOND",
    "REQUEST_BURST",
    "FailureBudget",
    "RequestBudget",
]
