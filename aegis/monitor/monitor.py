"""The expiry monitor: watches every certificate, publishes level changes, sends alerts.

:class:`ExpiryMonitor` is a twisted ``Service`` on the injected clock. It wakes

* every ``interval`` seconds (60 by default): it proves the store still takes writes (a
  heartbeat row, written together with the alert ledger), re-reads the certificates and
  hosts when they may have changed (an event said so, the registry reloaded, or
  ``inventory_interval`` passed), and re-assesses when anything changed;
* at the exact moment a certificate's level changes by time (:func:`aegis.monitor.levels.
  assess` says when), so a threshold shows within a second, not a polling period;
* at once when the lifecycle publishes an event (``cert_failed``, ``cert_renewed``,
  ``cert_retired``, ``cert_deleted`` ...), which it consumes from the shared
  :class:`~aegis.events.EventPublisher`.

Level changes are published as ``cert_level_changed`` events and every alert as
``alert_raised`` (both in the log under the one ``event`` key). Renewal failures alert
once per failure streak (``renewal_failed``) and once when it ends
(``renewal_recovered``); a certificate deleted or retired while it was serving host names
alerts once; the store refusing writes alerts once per outage (``store_failing``, then
``store_recovered``). The ledger (:mod:`aegis.monitor.alerts`) keeps all that across
restarts. Everything the health, banner and metrics read is in memory here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from aegis import events
from aegis.certs.lifecycle import LifecycleEngine
from aegis.events import Event, EventPublisher
from aegis.interfaces import IStore, IStoreTransaction
from aegis.monitor import alerts, kinds
from aegis.monitor.alerts import Alert, AlertLedger
from aegis.monitor.delivery import Dispatcher
from aegis.monitor.evaluate import Evaluation, evaluate, serving_map
from aegis.monitor.inventory import Watched, stored_certificates
from aegis.monitor.levels import Thresholds
from aegis.names import matches
from aegis.store.records import CertificateRecord, HostRecord
from aegis.timefmt import to_text
from aegis.tls.selection import SelectionSource

log = Logger()

HEARTBEAT_SETTING = "monitor_heartbeat"
LEVEL_CHANGED = "cert_level_changed"
ALERT_RAISED = "alert_raised"
_CHANGES = frozenset({events.CERT_FAILED, events.CERT_OBTAINED, events.CERT_RENEWED,
                      events.CERT_RETIRED, events.CERT_DELETED, events.CERT_RESET,
                      events.CERT_ABANDONED, events.CERT_WANTED})
_ATTEMPTS = frozenset({events.CERT_OBTAINING, events.CERT_RENEWING})


def _read(txn: IStoreTransaction) -> tuple[list[CertificateRecord], list[HostRecord], str | None]:
    return txn.list_certificates(), txn.list_hosts(), txn.get_setting(alerts.LEDGER_SETTING)


class ExpiryMonitor(Service):
    """See the module docstring. ``local`` lists the local CA certificates (they are not in
    the store); ``selection`` says which certificate serves which name."""

    name = "monitor"

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        dispatcher: Dispatcher,
        publisher: EventPublisher,
        *,
        lifecycle: LifecycleEngine | None = None,
        selection: SelectionSource | None = None,
        local: Callable[[], Sequence[Watched]] = list,
        thresholds: Thresholds | None = None,
        interval: float = 60.0,
        inventory_interval: float = 3600.0,
        alert_failures: int = 1,
        listeners: Mapping[str, Callable[[], bool]] | None = None,
    ) -> None:
        self._clock = clock
        self._store = store
        self.dispatcher = dispatcher
        self.events = publisher
        self.lifecycle = lifecycle
        self._selection = selection
        self._local = local
        self.thresholds = thresholds or Thresholds()
        self._interval = interval
        self._inventory_interval = inventory_interval
        self._alert_failures = max(1, alert_failures)
        self.listeners: dict[str, Callable[[], bool]] = dict(listeners or {})
        self.ledger = AlertLedger()
        self.evaluation = Evaluation()
        self.store_ok: bool | None = None
        self.store_error: str | None = None
        self.last_renewal_error: tuple[str, datetime] | None = None
        self.attempts: dict[str, int] = {}  # source -> attempts started
        self.failures: dict[tuple[str, str], int] = {}  # (source, reason) -> failed attempts
        self.alerts_raised: dict[str, int] = {}  # kind -> alerts raised
        self.checks = 0
        self.clock_jumps = 0
        self.last_clock_jump: tuple[datetime, float] | None = None
        self._last_check_at: datetime | None = None
        self.level_since: dict[str, datetime] = {}  # subject -> when its level last changed
        self._records: list[CertificateRecord] = []
        self._hosts: list[HostRecord] = []
        self._inventory_at: float | None = None
        self._stale = True  # the certificates or engine states changed: re-read, re-assess
        self._wakeup: IDelayedCall | None = None
        self._serving_cache: tuple[Any, datetime, dict[int, list[str]], dict[int, str]] | None
        self._serving_cache = None
        self._signature: object = None
        self._running_check: Deferred[None] | None = None
        self._again = False
        self._unsubscribe: Callable[[], None] | None = None
        self._loaded = False
        self._early: list[Event] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    # service

    def startService(self) -> None:
        super().startService()
        self._unsubscribe = self.events.subscribe(self._on_event)
        self.poke()

    def stopService(self) -> None:
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()

    # inputs

    def poke(self) -> None:
        """Something changed (certificates reloaded, an event): check again at once."""
        self._stale = True
        self._schedule(0.0)

    def _on_event(self, event: Event) -> None:
        if not self._loaded:  # decisions need the ledger: hold events until it is read
            self._early.append(event)
            return
        fields = event.fields
        source = str(fields.get("source", ""))
        if event.name in _ATTEMPTS:
            self.attempts[source] = self.attempts.get(source, 0) + 1
            return
        if event.name not in _CHANGES:
            return
        if event.name == events.CERT_FAILED:
            reason = str(fields.get("reason") or "error")
            self.failures[(source, reason)] = self.failures.get((source, reason), 0) + 1
            self.last_renewal_error = (reason, event.at)
            self._renewal_failed(event)
        elif event.name in (events.CERT_OBTAINED, events.CERT_RENEWED):
            self._renewal_recovered(event)
        elif event.name in (events.CERT_RETIRED, events.CERT_DELETED):
            self._gone_while_serving(event)
        self.poke()

    # the check

    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._wakeup is not None and self._wakeup.active():
            if self._wakeup.getTime() <= self._clock.seconds() + delay:
                return
            self._wakeup.cancel()
        self._wakeup = self._clock.callLater(max(0.0, delay), self._wake)

    def _wake(self) -> None:
        self._wakeup = None

        def failed(failure: Failure) -> None:
            log.failure("monitor check failed", failure)
            self._schedule(self._interval)  # a bug in one check must not stop the watch

        self.check().addErrback(failed)

    def check(self) -> Deferred[None]:
        """One check now (serialised: a check asked for while one runs follows it)."""
        if self._running_check is not None:
            self._again = True
            return self._running_check
        running = self._check()
        self._running_check = running

        def done(result: object) -> object:
            self._running_check = None
            if self._again:
                self._again = False
                self._schedule(0.0)
            return result

        return running.addBoth(done)

    def _check(self) -> Deferred[None]:
        """Callbacks rather than a coroutine: this runs every minute, and most runs only
        write the heartbeat."""
        self.checks += 1
        now = self.now()
        self._clock_jump(now)
        stale = self._stale

        def assess_and_beat(changed: bool) -> Deferred[None]:
            next_change = self.evaluation.next_change
            if changed or stale or next_change is None or now >= next_change:
                self._assess(now)
            return self._heartbeat(now)

        if stale or self._inventory_at is None or (
                self._clock.seconds() - self._inventory_at >= self._inventory_interval):
            read = Deferred.fromCoroutine(self._read_inventory())
            return read.addCallback(assess_and_beat)
        return assess_and_beat(False)

    def _reschedule(self, now: datetime) -> None:
        delay = self._interval
        if self.evaluation.next_change is not None:
            delay = min(delay, (self.evaluation.next_change - now).total_seconds())
        self._schedule(delay)

    def _clock_jump(self, now: datetime) -> None:
        """A check far later than scheduled means the clock jumped (a VM resumed, NTP fixed
        a wrong clock): certificate validity moved with it, so say so once."""
        last, self._last_check_at = self._last_check_at, now
        if last is None:
            return
        gap = (now - last).total_seconds()
        if gap <= max(3 * self._interval, 300.0):
            return
        self.clock_jumps += 1
        self.last_clock_jump = (now, gap)
        self._raise(kinds.clock_jumped(last, now))
        self._stale = True

    async def _read_inventory(self) -> bool:
        """Re-read certificates and hosts; whether they changed since the last read."""
        try:
            records, hosts, ledger_text = await self._store.transact(_read)
        except Exception as exc:
            self.store_ok, self.store_error = False, type(exc).__name__
            return False
        if not self._loaded:
            try:
                stored = AlertLedger.from_json(ledger_text)
                stored.merge(self.ledger)  # what happened before the store answered
                self.ledger = stored
            except (ValueError, TypeError, KeyError, IndexError):
                log.error("the alert ledger setting is unreadable; starting a new one")
            self._loaded = True
            early, self._early = self._early, []
            for event in early:
                self._on_event(event)
        self._inventory_at = self._clock.seconds()
        self._stale = False
        signature = (tuple((r.id, r.updated_at, r.fingerprint_sha256) for r in records),
                     tuple((h.id, h.updated_at) for h in hosts))
        if signature == self._signature:
            return False
        self._records, self._hosts, self._signature = records, hosts, signature
        return True

    def in_use(self, item: Watched) -> bool:
        """Whether a host wants ``item``: bound to it, or answering for one of its names
        (so an expired one means that host now serves the fallback)."""
        for host in self._hosts:
            if item.certificate_id is not None and host.ssl_cert_id == item.certificate_id:
                return True
            if any(matches(pattern, name) for pattern in item.names for name in host.names):
                return True
        return False

    def watched(self) -> list[Watched]:
        states = self.lifecycle.states() if self.lifecycle is not None else []
        return [*stored_certificates(self._records, states), *self._local()]

    def _serving(self, now: datetime) -> tuple[dict[int, list[str]], dict[int, str]]:
        """Which certificate serves which host name: recomputed when the table, the
        certificates or the hosts changed, or a served certificate's not-after passed."""
        table = self._selection.current() if self._selection is not None else None
        key = (table, table.generation() if table is not None else None, self._signature)
        cached = self._serving_cache
        if cached is not None and cached[0] == key and now < cached[1]:
            return cached[2], cached[3]
        names = [name for host in self._hosts for name in host.names]
        serving, steps, until = serving_map(table, names, now)
        self._serving_cache = (key, until or datetime.max.replace(tzinfo=UTC), serving, steps)
        return serving, steps

    def _assess(self, now: datetime) -> None:
        serving, steps = self._serving(now)
        previous = self.evaluation
        self.evaluation = evaluate(self.ledger, self.watched(), now, self.thresholds,
                                   serving, steps, previous)
        for item, before, level, assessment in self.evaluation.changes:
            self.level_since[item.subject] = now
            self.events.publish(LEVEL_CHANGED, subject=item.subject, new_level=level,
                                old_level=before, reason=assessment.reason,
                                certificate_id=item.certificate_id, source=item.source,
                                not_after=item.not_after)
        for alert in self.evaluation.alerts:
            self._raise(alert, record=False)
        for cert_id, names_served in previous.serving.items():
            if cert_id not in self.evaluation.serving and f"certificate:{cert_id}" not in (
                    self.evaluation.watched):
                old = previous.watched.get(f"certificate:{cert_id}")
                if old is not None:
                    self._raise(kinds.gone_while_serving(alerts.DELETED_WHILE_SERVING, old,
                                                         names_served, now))

    def _heartbeat(self, now: datetime) -> Deferred[None]:
        """Write the heartbeat (and the ledger, if it changed): proves the store takes
        writes; alerts once when it stops and once when it is back."""
        ledger = self.ledger
        text = ledger.to_json() if ledger.dirty else None

        def write(txn: IStoreTransaction) -> None:
            txn.set_setting(HEARTBEAT_SETTING, to_text(now))
            if text is not None:
                txn.set_setting(alerts.LEDGER_SETTING, text)

        def failed(failure: Failure) -> None:
            self._reschedule(now)
            self.store_ok = False
            self.store_error = type(failure.value).__name__
            if ledger.store_failing_since is None:
                ledger.store_failing_since = to_text(now)
                self._raise(kinds.store_failing(now, self.store_error))

        def written(_: object) -> None:
            self._reschedule(now)
            if text is not None and ledger.to_json() == text:
                ledger.dirty = False
            self.store_ok, self.store_error = True, None
            if ledger.store_failing_since is not None:
                since, ledger.store_failing_since = ledger.store_failing_since, None
                ledger.dirty = True
                self._raise(kinds.store_recovered(now, since))

        done: Deferred[None] = self._store.transact(write).addCallbacks(written, failed)
        return done

    # alerts from events

    def _raise(self, alert: Alert, record: bool = True) -> None:
        if record:
            if self.ledger.was_sent(alert.key):
                return
            self.ledger.record(alert)
        self.alerts_raised[alert.kind] = self.alerts_raised.get(alert.kind, 0) + 1
        self.events.publish(ALERT_RAISED, kind=alert.kind, key=alert.key,
                            subject=alert.subject, severity=alert.severity,
                            summary=alert.summary)
        self.dispatcher.dispatch(alert)

    def _renewal_failed(self, event: Event) -> None:
        fields = event.fields
        key, failures = str(fields.get("name", "")), int(fields.get("failures") or 0)
        if failures < self._alert_failures or key in self.ledger.streaks:
            return
        since = to_text(event.at)
        self.ledger.streaks[key] = since
        self.ledger.dirty = True
        self._raise(kinds.renewal_failed(key, since, event.at, fields))

    def _renewal_recovered(self, event: Event) -> None:
        key = str(event.fields.get("name", ""))
        since = self.ledger.streaks.pop(key, None)
        if since is None:
            return
        self.ledger.dirty = True
        self._raise(kinds.renewal_recovered(key, since, event.at, event.fields))

    def _gone_while_serving(self, event: Event) -> None:
        cert_id = event.fields.get("certificate_id")
        if not isinstance(cert_id, int):
            return
        served = self.evaluation.serving.get(cert_id)
        old = self.evaluation.watched.get(f"certificate:{cert_id}")
        if served and old is not None:
            kind = (alerts.RETIRED_WHILE_SERVING if event.name == events.CERT_RETIRED
                    else alerts.DELETED_WHILE_SERVING)
            self._raise(kinds.gone_while_serving(kind, old, served, event.at))


__all__ = ["ALERT_RAISED", "HEARTBEAT_SETTING", "LEVEL_CHANGED", "ExpiryMonitor"]
