"""Named events: one publisher that logs them and hands them to whoever subscribed.

Why one publisher: the certificate lifecycle, the monitor, the metrics and the admin UI all
need the same facts ("this name failed to renew", "this certificate was retired") at the
moment they happen. Each producer calls :meth:`EventPublisher.publish` once; the event goes
to ``twisted.logger`` with the single key ``event`` (so ``grep event=cert_failed`` and JSON
log pipelines find every one of them) and to every subscriber, synchronously, on the
reactor thread. A subscriber that raises is logged and never disturbs the producer or the
other subscribers.

Fields are public facts (ids, names, sources, dates, error texts that were already cut to
what an operator may read): never key material or tokens.

The lifecycle's names are listed in :data:`LIFECYCLE_EVENTS` (see docs/lifecycle.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

log = Logger(namespace="aegis.events")

CERT_WANTED = "cert_wanted"
CERT_OBTAINING = "cert_obtaining"
CERT_OBTAINED = "cert_obtained"
CERT_RENEWING = "cert_renewing"
CERT_RENEWED = "cert_renewed"
CERT_FAILED = "cert_failed"
CERT_RETIRED = "cert_retired"
CERT_ABANDONED = "cert_abandoned"
CERT_DELETED = "cert_deleted"
CERT_RESET = "cert_reset"

LIFECYCLE_EVENTS = (
    CERT_WANTED, CERT_OBTAINING, CERT_OBTAINED, CERT_RENEWING, CERT_RENEWED, CERT_FAILED,
    CERT_RETIRED, CERT_ABANDONED, CERT_DELETED, CERT_RESET,
)

_WARN = frozenset({CERT_FAILED, CERT_ABANDONED})


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``name`` (e.g. ``cert_failed``), when, and its facts."""

    name: str
    at: datetime
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))


Subscriber = Callable[[Event], object]


def _describe(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={{{key}}}" for key in fields)


class EventPublisher:
    """Publishes :class:`Event` values to the log and to subscribers.

    ``clock`` stamps events (a ``Clock`` in tests). Not thread-safe: publish on the reactor
    thread (every producer in Aegis runs there).
    """

    def __init__(self, clock: IReactorTime, logger: Logger | None = None) -> None:
        self._clock = clock
        self._log = logger or log
        self._subscribers: list[Subscriber] = []
        self.history: list[Event] = []
        self.keep = 0  # how many recent events ``history`` keeps (0: none; tests set it)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; the returned function removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, name: str, /, **fields: Any) -> Event:
        """Log ``name`` with ``fields`` (key ``event``) and hand it to every subscriber."""
        event = Event(name, datetime.fromtimestamp(self._clock.seconds(), UTC), fields)
        level = LogLevel.warn if name in _WARN else LogLevel.info
        self._log.emit(level, name + " " + _describe(fields), event=name, **fields)
        if self.keep:
            self.history.append(event)
            del self.history[:-self.keep]
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                self._log.failure("event subscriber failed on {event}", event=name)
        return event


__all__ = [
    "CERT_ABANDONED",
    "CERT_DELETED",
    "CERT_FAILED",
    "CERT_OBTAINED",
    "CERT_OBTAINING",
    "CERT_RENEWED",
    "CERT_RENEWING",
    "CERT_RESET",
    "CERT_RETIRED",
    "CERT_WANTED",
    "LIFECYCLE_EVENTS",
    "Event",
    "EventPublisher",
    "Subscriber",
]
