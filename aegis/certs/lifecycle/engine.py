"""The lifecycle engine: one state machine per automatically managed name set, one timer.

Modelled on certmagic (``maintain.go``, ``certmagic.go``): whatever the source, a name set
Aegis manages moves through ``wanted → obtaining → valid → renewing → valid``, with
``failed`` (backing off) after an unsuccessful attempt and ``retired`` once no host wants it
(drawn in docs/lifecycle.md). The engine knows no source: it asks the registry which sets
are demanded (:mod:`.demand`), orders through each source's :class:`ICertificateIssuer`,
and stores what comes back itself (:mod:`.transitions`). Everything is persisted per set,
so a restart resumes: a valid set is not ordered again before its renewal time, a failed
one not before ``next_attempt_at``, an order in flight is resumed with its sealed key.

Limits (docs/lifecycle.md): one attempt per set at a time (single flight), at most
``max_concurrent`` attempts at once, a per-CA request budget the issuers pace themselves
by, and a failed-attempt budget per set below the CA's published limit. The old
certificate keeps serving until the new one is stored.

One timer drives it all, on the injected clock (a ``Clock`` in tests): it fires at the
earliest due time or after ``check_interval`` with jitter, whichever is first. The same
timer asks issuers whose CA suggests renewal windows (:class:`IRenewalAdvisor`, ACME ARI)
about each valid certificate when its advice is due (:mod:`.advice`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aegis import events
from aegis.certs.lifecycle import transitions
from aegis.certs.lifecycle._advice_pass import AdvicePass
from aegis.certs.lifecycle._base import error_text
from aegis.certs.lifecycle._controls import OperatorControls
from aegis.certs.lifecycle._demand_sync import DemandSync
from aegis.certs.lifecycle.advice import AdviceBook
from aegis.certs.lifecycle.budget import FailureBudget
from aegis.certs.lifecycle.demand import Demand
from aegis.certs.lifecycle.policy import renewal_time
from aegis.crypto.keys import KeyKind, build_csr
from aegis.crypto.keywrap import KeyWrapper
from aegis.events import EventPublisher
from aegis.interfaces import (
    ICertificateIssuer,
    IOnDemandIssuance,
    IRenewalAdvisor,
    IStore,
)
from aegis.names import InvalidHostname, normalise
from aegis.store.records import CertificateRecord, IssuanceState

log = Logger()

# certmagic's retry intervals (maintain/async.go), in seconds, capped at 6 hours.
RETRY_INTERVALS: tuple[float, ...] = (
    60, 120, 120, 300, 600, 600, 600, 1200, 1200, 1200, 1200,
    1800, 1800, 1800, 1800, 1800, 1800, 3600, 3600, 3600, 7200, 7200,
    10800, 10800, 10800, 10800, 21600,
)
CHECK_INTERVAL = 600.0
MAX_CONCURRENT = 4


@implementer(IOnDemandIssuance)
class LifecycleEngine(DemandSync, OperatorControls, AdvicePass):
    """Obtains, renews and retires every automatically managed certificate.

    ``reload`` publishes a stored certificate to the TLS layer (``ProxyState.reload``).
    Read the state from memory at any time (:meth:`states`, :meth:`state`, :meth:`for_name`).
    """

    name = "lifecycle"

    def __init__(
        self,
        clock: IReactorTime,
        store: IStore,
        wrapper: KeyWrapper,
        issuers: Mapping[str, ICertificateIssuer],
        reload: Callable[[], object],
        publisher: EventPublisher | None = None,
        check_interval: float = CHECK_INTERVAL,
        retry_intervals: Sequence[float] = RETRY_INTERVALS,
        failure_budget: FailureBudget | None = None,
        max_concurrent: int = MAX_CONCURRENT,
        jitter: Callable[[], float] = random.random,
        preload: Sequence[Callable[[], Deferred[None]]] = (),
    ) -> None:
        self._clock = clock
        self._store = store
        self._wrapper = wrapper
        self._issuers = dict(issuers)
        self._reload = reload
        self.events = publisher or EventPublisher(clock)
        self._check_interval = check_interval
        self._retry = tuple(retry_intervals)
        self._budget = failure_budget or FailureBudget()
        self._max_concurrent = max(1, max_concurrent)
        self._jitter = jitter
        self._preload = tuple(preload)
        self._demand: dict[str, Demand] = {}
        self._states: dict[str, IssuanceState] = {}
        self._certificate_ids: set[int] = set()
        self._inflight: dict[str, Deferred[None]] = {}
        self._waiters: dict[str, list[Deferred[None]]] = {}
        self._wakeup: IDelayedCall | None = None
        self._refresh_lock = DeferredLock()
        self._queued_refresh: list[Deferred[None]] | None = None
        self._refreshed_at = 0.0
        self._ticking = False
        self._tick_again = False
        self.attempts_started = 0
        self.advice = AdviceBook(jitter)

    # requests

    def certificate_wanted(self, hostname: str) -> None:
        try:
            name = normalise(hostname, allow_wildcard=False)
        except (InvalidHostname, ValueError):
            return
        try:
            if name in self._demand and name not in self._inflight:
                self.obtain(name).addErrback(lambda f: None)
        except Exception:  # the handshake path must never see an exception
            log.failure("certificate_wanted failed for {name}", name=name)

    def obtain(self, key: str, force: bool = False) -> Deferred[None]:
        """Start an attempt for ``key`` now if it is due (``force``: even if not yet due);
        fires when it ended. Refused (fires at once, nothing ordered) for sets not demanded
        and, unless forced, before they are due. Concurrent calls share one attempt."""
        waiter: Deferred[None] = Deferred()
        if key in self._inflight:
            self._waiters[key].append(waiter)
            return waiter
        demand = self._demand.get(key)
        if demand is None or (not force and not self._due(key, self.now())):
            return succeed(None)
        self._waiters[key] = [waiter]
        running = Deferred.fromCoroutine(self._attempt(demand))
        self._inflight[key] = running

        def done(result: object) -> None:
            self._inflight.pop(key, None)
            if self.running:
                self._tick()  # a slot is free; before waking waiters (they may move time)
            for each in self._waiters.pop(key, []):
                each.callback(None)

        running.addBoth(done)
        return waiter

    # one attempt

    async def _attempt(self, demand: Demand) -> None:
        now, wrapper, key = self.now(), self._wrapper, demand.key
        issuer = self._issuers[demand.source]
        kind: KeyKind = demand.options.get("key_kind") or issuer.key_kind
        try:
            private_key, state = await self._store.transact(
                lambda txn: transitions.begin_attempt(txn, wrapper, demand, now, kind))
        except CancelledError:
            raise
        except Exception as exc:  # the store cannot record the attempt (disk full, ...)
            self._failed_unrecorded(demand, error_text(exc), now, None)
            return
        self._states[key] = state
        renewing = state.status == "renewing"
        self.attempts_started += 1
        self.events.publish(events.CERT_RENEWING if renewing else events.CERT_OBTAINING,
                            name=key, source=demand.source, names=list(demand.names),
                            issuer=issuer.identity)
        try:
            csr, names = build_csr(private_key, list(demand.names)), list(demand.names)
            replaced = None
            if renewing and IRenewalAdvisor.providedBy(issuer):
                replaced = await self._store.transact(
                    lambda txn: transitions.certificate_of(txn, state))
            if replaced is not None:
                advisor: Any = issuer
                chain = await advisor.issue_replacing(csr, names, replaced,
                                                      dict(demand.options))
            else:
                chain = await issuer.issue(csr, names, dict(demand.options))
            # An issuer over several CAs says which one made this chain (a fallback CA).
            identity_for = getattr(issuer, "identity_for", None)
            identity = identity_for(chain) if identity_for is not None else issuer.identity
            if key not in self._demand:
                raise CancelledError()  # abandoned while the CA answered: store nothing

            def renews_at(record: CertificateRecord) -> datetime:
                window = issuer.renewal_window(record.not_before, record.not_after)
                return renewal_time(record.not_before, record.not_after, window, self._jitter)

            state, record, renewed = await self._store.transact(
                lambda txn: transitions.finish_success(
                    txn, wrapper, demand, chain, private_key, identity, renews_at))
        except CancelledError:
            raise
        except Exception as exc:
            await self._record_failure(demand, exc)
            return
        self._states[key] = state
        self._certificate_ids.add(record.id)
        self.advice.forget(key)  # a new certificate: ask its CA about it at once
        self.events.publish(events.CERT_RENEWED if renewed else events.CERT_OBTAINED,
                            name=key, source=demand.source, certificate_id=record.id,
                            names=list(demand.names), issuer=state.issuer,
                            not_after=record.not_after, renews_at=state.renews_at)
        try:
            await maybeDeferred(self._reload)
        except Exception:
            log.failure("reload after {name} failed", name=key)

    async def _record_failure(self, demand: Demand, exc: Exception) -> None:
        failed = self.now()
        wait_until = None
        retry_at = getattr(exc, "retry_at", None)
        if isinstance(retry_at, int | float):
            seconds = max(0.0, retry_at - self._clock.seconds())
            wait_until = failed + timedelta(seconds=math.ceil(seconds))
        error, retry, budget = error_text(exc), self._retry, self._budget
        try:
            state = await self._store.transact(
                lambda txn: transitions.finish_failure(
                    txn, demand, error, failed, retry, budget, wait_until))
        except CancelledError:
            raise
        except Exception:
            self._failed_unrecorded(demand, error, failed, wait_until)
            return
        self._states[demand.key] = state
        self._publish_failure(state, type(exc).__name__)

    def _failed_unrecorded(self, demand: Demand, error: str, when: datetime,
                           not_before: datetime | None) -> None:
        """A failure the store could not record (disk full): keep the backoff in memory,
        so the schedule waits as it would have, instead of ordering again at once."""
        previous = self._states.get(demand.key) or IssuanceState(
            name=demand.key, names=demand.names, source=demand.source)
        state = transitions.failed_state(previous, error, when, self._retry, self._budget,
                                         not_before)
        self._states[demand.key] = state
        self._publish_failure(state, "StoreError")

    def _publish_failure(self, state: IssuanceState, reason: str) -> None:
        self.events.publish(events.CERT_FAILED, name=state.name, source=state.source,
                            failures=state.failures, next_attempt_at=state.next_attempt_at,
                            error=state.last_error, reason=reason,
                            certificate_id=state.certificate_id)

    # the timer

    def _schedule(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        now = self.now()
        delay = self._check_interval * (0.9 + 0.2 * self._jitter())
        if len(self._inflight) < self._max_concurrent:
            for key in self._demand:
                if key in self._inflight:
                    continue
                due = self._due_at(key)
                if due is None:
                    delay = 0.0
                    break
                delay = min(delay, max(0.0, (due - now).total_seconds()))
        for key in self._demand:
            if self._advisor(key) is not None:
                ask = self.advice.next_check(key, now)
                delay = min(delay, max(0.0, (ask - now).total_seconds()))
        self._wakeup = self._clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        """Start what is due, up to ``max_concurrent``; then set the timer. Re-entrant
        calls (an attempt that ends at once frees its slot inside this loop) fold into one
        more pass instead of recursing."""
        if self._ticking:
            self._tick_again = True
            return
        if (self.running and not self._refresh_lock.locked
                and self._clock.seconds() - self._refreshed_at >= self._check_interval):
            # Demand also changes with time alone (a covering certificate near its end).
            self.refresh().addErrback(lambda f: log.failure("lifecycle refresh failed", f))
            return
        self._ticking = True
        try:
            again = True
            while again:
                self._tick_again = False
                self._start_due()
                self._start_advice()
                again = self._tick_again
        finally:
            self._ticking = False
        self._schedule()

    def _start_due(self) -> None:
        now = self.now()
        due = sorted((key for key in self._demand
                      if key not in self._inflight and self._due(key, now)),
                     key=lambda k: (self._due_at(k) or now, k))
        for key in due:
            if len(self._inflight) >= self._max_concurrent:
                break
            if key not in self._inflight:
                self.obtain(key).addErrback(
                    lambda f: log.failure("a certificate attempt failed", f))

    # service

    def startService(self) -> Deferred[None]:
        """Load what must be in memory (challenge answers, states), then read the demand and
        start whatever is due. Fires when that first pass has been scheduled."""
        Service.startService(self)

        async def start() -> None:
            for load in self._preload:
                await load()
            states = await self._store.transact(lambda txn: txn.list_issuance_states())
            self._states = {state.name: state for state in states}
            await self.refresh()

        return Deferred.fromCoroutine(start())

    def stopService(self) -> Deferred[Any]:
        """Stop the timer and cancel attempts (not abandoned: the next start resumes them)."""
        Service.stopService(self)
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        running = list(self._inflight.values())
        for each in running:
            each.cancel()
        return DeferredList(running, consumeErrors=True)


__all__ = ["CHECK_INTERVAL", "MAX_CONCURRENT", "RETRY_INTERVALS", "LifecycleEngine",
           "error_text"]
