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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
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
from aegis.certs.lifecycle.advice import AdviceBook
from aegis.certs.lifecycle.budget import FailureBudget
from aegis.certs.lifecycle.demand import Demand, DemandInputs, coverage, demanded
from aegis.certs.lifecycle.policy import renewal_time
from aegis.crypto.keys import KeyKind, build_csr
from aegis.crypto.keywrap import KeyWrapper
from aegis.events import EventPublisher
from aegis.interfaces import (
    ICertificateIssuer,
    IOnDemandIssuance,
    IRenewalAdvisor,
    IStore,
    IStoreTransaction,
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
ACTIVE = frozenset({"obtaining", "renewing"})


def error_text(exc: BaseException) -> str:
    """One line for ``last_error``: our exceptions never carry secrets; cut to 500 chars."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]


class Refresh:
    """What one demand refresh found, computed inside its store transaction."""

    def __init__(self) -> None:
        self.demand: dict[str, Demand] = {}
        self.states: dict[str, IssuanceState] = {}
        self.certificate_ids: set[int] = set()
        self.retired: list[IssuanceState] = []
        self.revived: list[IssuanceState] = []


@implementer(IOnDemandIssuance)
class LifecycleEngine(Service):
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
        self._refreshed_at = 0.0
        self._ticking = False
        self._tick_again = False
        self.attempts_started = 0
        self.advice = AdviceBook(jitter)

    # time and reading (memory only: safe from any request handler)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def state(self, key: str) -> IssuanceState | None:
        return self._states.get(key)

    def states(self) -> list[IssuanceState]:
        return [self._states[key] for key in sorted(self._states)]

    def for_name(self, name: str) -> IssuanceState | None:
        """The state of the set that orders ``name`` (its own key first)."""
        found = self._states.get(name)
        if found is not None:
            return found
        for state in self._states.values():
            if name in state.ordered_names and state.status != "retired":
                return state
        return None

    def demanded(self) -> dict[str, Demand]:
        return dict(self._demand)

    def issuer_of(self, source: str) -> ICertificateIssuer | None:
        return self._issuers.get(source)

    def in_flight(self, key: str) -> bool:
        return key in self._inflight

    # demand: what hosts and certificates ask for

    def refresh(self) -> Deferred[None]:
        """Re-read hosts and certificates, retire what is no longer wanted, take up what is
        newly wanted, and start whatever is due. Serialised; idempotent."""
        return self._refresh_lock.run(lambda: Deferred.fromCoroutine(self._refresh()))

    async def _refresh(self) -> None:
        now = self.now()
        self._refreshed_at = self._clock.seconds()
        found = await self._store.transact(lambda txn: self._read_demand(txn, now))
        try:
            await self._store.transact(lambda txn: self._apply_demand(txn, found, now))
        except CancelledError:
            raise
        except Exception as exc:
            # The store cannot record it (disk full): the demand holds in memory all the
            # same, so wanted names are still obtained and the next refresh records it.
            log.warn("lifecycle_refresh_unrecorded error={error}", error=error_text(exc))
            for key, demand in found.demand.items():
                if key not in found.states or found.states[key].status == "retired":
                    found.states[key] = self._states.get(key) or IssuanceState(
                        name=key, names=demand.names, source=demand.source)
            found.retired, found.revived = [], []
        self._demand = found.demand
        self._certificate_ids = found.certificate_ids
        for key, state in found.states.items():
            if key not in self._inflight:  # an attempt in flight keeps its own view
                self._states[key] = state
        for state in found.retired:
            await self._retired(state)
        for state in found.revived:
            self.events.publish(events.CERT_WANTED, name=state.name, source=state.source,
                                names=list(state.ordered_names))
        if self.running:
            self._tick()

    async def _retired(self, state: IssuanceState) -> None:
        running = self._inflight.get(state.name)
        if running is not None:
            running.cancel()
            self.events.publish(events.CERT_ABANDONED, name=state.name, source=state.source,
                                names=list(state.ordered_names))
        issuer = self._issuers.get(state.source)
        if issuer is not None:
            try:
                await issuer.abandon(state.ordered_names)
            except Exception:
                log.failure("abandoning the order of {name} failed", name=state.name)
        self._states[state.name] = state
        self.events.publish(events.CERT_RETIRED, name=state.name, source=state.source,
                            certificate_id=state.certificate_id)

    def _read_demand(self, txn: IStoreTransaction, now: datetime) -> Refresh:
        hosts, certificates = txn.list_hosts(), txn.list_certificates()
        found = Refresh()
        found.certificate_ids = {c.id for c in certificates}
        demand = demanded(DemandInputs(hosts, certificates, now, coverage(certificates, now)))
        found.demand = {k: d for k, d in demand.items() if d.source in self._issuers}
        found.states = {state.name: state for state in txn.list_issuance_states()}
        return found

    def _apply_demand(self, txn: IStoreTransaction, found: Refresh, now: datetime) -> None:
        for key, state in list(found.states.items()):
            if key not in found.demand and state.status != "retired":
                retired = transitions.retire(txn, key, now)
                if retired is not None:
                    found.retired.append(retired)
                    found.states[key] = retired
        for key, demand in found.demand.items():
            existing = found.states.get(key)
            if existing is None or existing.status == "retired":
                state = transitions.revive(txn, demand)
                found.states[key] = state
                found.revived.append(state)

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

    def retry(self, key: str, renew: bool = False) -> Deferred[IssuanceState | None]:
        """The operator's "retry now": clear the backoff and start at once (unless the
        set's failed-attempt budget is spent: then ``next_attempt_at`` says when).
        ``renew``: start even if the set is valid and not yet due (renew now)."""
        return Deferred.fromCoroutine(self._retry_now(key, renew))

    async def _retry_now(self, key: str, renew: bool = False) -> IssuanceState | None:
        if key not in self._demand:
            return self._states.get(key)
        now, budget = self.now(), self._budget

        def work(txn: IStoreTransaction) -> IssuanceState | None:
            state = transitions.reset(txn, key, keep_budget=True)
            if state is None:
                return None
            wait = budget.earliest_attempt(state.recent_failures, now)
            if wait is not None:
                state = replace(state, next_attempt_at=wait, status="failed")
                txn.put_issuance_state(state)
            return state

        state = await self._store.transact(work)
        if state is not None:
            self._states[key] = state
            self.events.publish(events.CERT_RESET, name=key, source=state.source,
                                reason="retry")
        current = self._states.get(key)
        waiting = (current is not None and current.status == "failed"
                   and current.next_attempt_at is not None and current.next_attempt_at > now)
        if (renew or self._due(key, now)) and not waiting and key not in self._inflight:
            self.obtain(key, force=True).addErrback(lambda f: None)
        return self._states.get(key)

    def reset_names(self, names: Iterable[str], reason: str) -> Deferred[None]:
        """Forget the certificate and backoff of every set ordering one of ``names`` (its
        certificate was deleted by force): a new order starts at once."""
        wanted = set(names)
        keys = [k for k, s in self._states.items() if wanted & set(s.ordered_names)]
        keys += [k for k, d in self._demand.items() if wanted & set(d.names) and k not in keys]
        return Deferred.fromCoroutine(self._reset(keys, reason))

    async def _reset(self, keys: list[str], reason: str) -> None:
        def work(txn: IStoreTransaction) -> list[IssuanceState]:
            return [s for s in (transitions.reset(txn, k) for k in keys) if s is not None]

        for state in await self._store.transact(work):
            self._states[state.name] = state
            self.events.publish(events.CERT_RESET, name=state.name, source=state.source,
                                reason=reason)
        await self.refresh()

    def _issuer_changed(self, state: IssuanceState) -> bool:
        """Made by another CA or account than the source's issuer now speaks for. An
        issuer over several CAs (a fallback list) names them all in ``identities``."""
        issuer = self._issuers.get(state.source)
        if issuer is None or state.issuer is None:
            return False
        return state.issuer not in getattr(issuer, "identities", (issuer.identity,))

    def _due_at(self, key: str) -> datetime | None:
        """When ``key`` is next due (None: now)."""
        state = self._states.get(key)
        if state is None or state.status in ("wanted", *ACTIVE):
            return None  # an active state not in flight is a crash's leftover: resume
        if state.status == "valid":
            if state.certificate_id not in self._certificate_ids or self._issuer_changed(state):
                return None
            return state.renews_at
        if state.status == "failed":
            return state.next_attempt_at
        return datetime.max.replace(tzinfo=UTC)  # retired: never

    def _due(self, key: str, now: datetime) -> bool:
        due = self._due_at(key)
        return due is None or now >= due

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

    # renewal advice (ACME ARI): the CA's window moves the renewal time

    def _advisor(self, key: str) -> Any:
        """The set's issuer if it takes renewal advice and the set waits on a certificate
        it made; else None (nothing to ask)."""
        state = self._states.get(key)
        if (state is None or state.status != "valid" or key in self._inflight
                or key in self.advice.running or self._issuer_changed(state)
                or state.certificate_id not in self._certificate_ids):
            return None
        issuer = self._issuers.get(state.source)
        return issuer if IRenewalAdvisor.providedBy(issuer) else None

    def _start_advice(self) -> None:
        now = self.now()
        for key in self._demand:
            advisor = self._advisor(key)
            if advisor is not None and now >= self.advice.next_check(key, now):
                Deferred.fromCoroutine(self._advise(key, advisor)).addErrback(
                    lambda f: log.failure("renewal advice failed", f))

    async def _advise(self, key: str, advisor: Any) -> None:
        self.advice.running.add(key)
        try:
            await self._take_advice(key, advisor)
        finally:
            self.advice.running.discard(key)
        if self.running:
            self._schedule()

    async def _take_advice(self, key: str, advisor: Any) -> None:
        state = self._states[key]
        self.advice.lookups += 1
        try:
            record = await self._store.transact(
                lambda txn: transitions.certificate_of(txn, state))
            if record is None:
                return
            advice = await advisor.renewal_info(record)
        except CancelledError:
            raise
        except Exception as exc:
            log.info("renewal_info_failed name={name} error={error}", name=key,
                     error=error_text(exc))
            self.advice.failed(key, self.now())
            return
        renews_at = self.advice.advised(key, advice, state.renews_at, record.not_before)
        if renews_at is not None and renews_at != state.renews_at:
            updated = await self._store.transact(
                lambda txn: transitions.reschedule(txn, key, state.certificate_id, renews_at))
            if updated is not None and key not in self._inflight:
                self._states[key] = updated
                log.info("renewal_rescheduled name={name} renews_at={renews_at} "
                         "window_start={start} window_end={end}", name=key,
                         renews_at=renews_at.isoformat(), start=advice.window[0].isoformat(),
                         end=advice.window[1].isoformat())

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
