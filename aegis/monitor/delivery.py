"""Delivering alerts to every configured channel, with retries and backoff.

A channel (:class:`AlertChannel`: the webhook, the mail sender) makes *one* attempt per
call. :class:`Dispatcher` runs the attempts: the first at once, then after each delay of
``retry_delays`` (10 s, 30 s, 2 min, 10 min, 30 min by default), each channel on its own so
a dead mail server does not hold back the webhook. What happened is kept per channel for
the metrics and the health detail: alerts delivered and failed by kind, the last error (a
short text that never includes a URL, a password or a token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from aegis.monitor.alerts import Alert

log = Logger()

RETRY_DELAYS: tuple[float, ...] = (10, 30, 120, 600, 1800)


class AlertChannel(Protocol):
    """One destination. ``label`` names it without secrets (``webhook 1``, ``mail``)."""

    label: str

    def send(self, alert: Alert) -> Deferred[None]:
        """One delivery attempt; fails with an exception whose text holds no secret."""


class DeliveryError(Exception):
    """A channel refused or could not deliver (the text is safe to log and show)."""


@dataclass
class ChannelStats:
    """What one channel did since start (read by the metrics collector)."""

    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # given up after every retry
    attempts_failed: int = 0
    last_error: str | None = None
    last_delivered_at: float | None = None


def safe_error(exc: BaseException) -> str:
    """A short text for an exception: our DeliveryError's message, else the type name (a
    library's message could quote a URL with a token in it)."""
    if isinstance(exc, DeliveryError):
        return str(exc)[:200]
    return type(exc).__name__


class Dispatcher:
    """Sends each alert to every channel; see the module docstring."""

    def __init__(self, clock: IReactorTime, channels: Sequence[AlertChannel] = (),
                 retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self._clock = clock
        self.channels = list(channels)
        self._delays = tuple(retry_delays)
        self.stats: dict[str, ChannelStats] = {c.label: ChannelStats() for c in self.channels}
        self.in_flight: set[Deferred[list[str | None]]] = set()  # alerts still being sent

    def dispatch(self, alert: Alert) -> Deferred[list[str | None]]:
        """Deliver ``alert`` everywhere; fires with each channel's final error (None: ok).
        Never fails."""
        runs = [Deferred.fromCoroutine(self._deliver(channel, alert, retries=True))
                for channel in self.channels]
        done: Deferred[list[str | None]] = DeferredList(runs).addCallback(
            lambda results: [value for _ok, value in results])
        if not done.called:
            self.in_flight.add(done)

            def finished(result: list[str | None]) -> list[str | None]:
                self.in_flight.discard(done)
                return result

            done.addCallback(finished)
        return done

    def try_once(self, alert: Alert) -> Deferred[list[tuple[str, str | None]]]:
        """One attempt per channel (the "send test alert" API): ``(label, error or None)``."""
        runs = [Deferred.fromCoroutine(self._deliver(channel, alert, retries=False))
                for channel in self.channels]
        labels = [channel.label for channel in self.channels]
        done: Deferred[list[tuple[str, str | None]]] = DeferredList(runs).addCallback(
            lambda results: list(zip(labels, [value for _ok, value in results], strict=True)))
        return done

    async def _deliver(self, channel: AlertChannel, alert: Alert, retries: bool) -> str | None:
        stats = self.stats.setdefault(channel.label, ChannelStats())
        delays = self._delays if retries else ()
        error = "not attempted"
        for attempt in range(len(delays) + 1):
            if attempt:
                await deferLater(self._clock, delays[attempt - 1], lambda: None)
            try:
                await maybeDeferred(channel.send, alert)
            except Exception as exc:
                error = safe_error(exc)
                stats.attempts_failed += 1
                stats.last_error = error
                log.warn("alert {kind} {key} to {channel} failed (attempt {attempt}): "
                         "{error}", kind=alert.kind, key=alert.key, channel=channel.label,
                         attempt=attempt + 1, error=error)
                continue
            stats.delivered[alert.kind] = stats.delivered.get(alert.kind, 0) + 1
            stats.last_delivered_at = self._clock.seconds()
            stats.last_error = None
            log.info("alert {kind} {key} delivered to {channel}", kind=alert.kind,
                     key=alert.key, channel=channel.label)
            return None
        stats.failed[alert.kind] = stats.failed.get(alert.kind, 0) + 1
        log.error("alert {kind} {key} to {channel} given up: {error}", kind=alert.kind,
                  key=alert.key, channel=channel.label, error=error)
        return error


__all__ = ["RETRY_DELAYS", "AlertChannel", "ChannelStats", "DeliveryError", "Dispatcher",
           "safe_error"]
