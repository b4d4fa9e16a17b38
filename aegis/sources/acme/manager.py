"""The issuance manager: when to order, renew and retry certificates, one name at a time.

Modelled on certmagic's ``maintain.go``: each hostname of a ``letsencrypt`` host gets its own
certificate; a certificate is renewed once a third of its lifetime remains; failures are
retried on certmagic's schedule (1 min, 2, 2, 5, 10 ... growing to 6 h) while whatever
certificate the name already has keeps serving. All of it is persisted per name
(:class:`aegis.store.records.IssuanceState`), which is what makes restarts safe:

* a name whose certificate is valid and not yet due is never ordered again;
* a name that failed is not tried before its ``next_attempt_at``; a ``rateLimited`` answer
  sets that to the CA's Retry-After, so a restart cannot loop against the CA;
* an order in flight keeps its URL and its (sealed) certificate key, so after a crash the
  same order is resumed rather than a second one created.

One timer drives everything: it fires at the earliest due time (a retry, a renewal) or
after ``check_interval`` with jitter, whichever is first. Time is the injected reactor's
``seconds()``, so tests move a :class:`~twisted.internet.task.Clock`.

Events (``twisted.logger``, field ``event``): ``cert_obtaining``, ``cert_obtained``,
``cert_renewed``, ``cert_failed``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from aegis.crypto.keys import KeyKind, build_csr
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import ICertificateIssuer, IOnDemandIssuance, IStore
from aegis.names import InvalidHostname, normalise
from aegis.sources.acme._state import (
    begin_attempt,
    failed_state,
    finish_failure,
    finish_success,
    renewal_time,
)
from aegis.sources.acme._transport import AcmeRateLimited
from aegis.store.records import IssuanceState

log = Logger()

# certmagic's retry intervals (maintain/async.go), in seconds, capped at 6 hours.
RETRY_INTERVALS: tuple[float, ...] = (
    60, 120, 120, 300, 600, 600, 600, 1200, 1200, 1200, 1200,
    1800, 1800, 1800, 1800, 1800, 1800, 3600, 3600, 3600, 7200, 7200,
    10800, 10800, 10800, 10800, 21600,
)
CHECK_INTERVAL = 600.0


def _error_text(exc: BaseException) -> str:
    """One line for ``last_error``: our exceptions never carry secrets; cut to 500 chars."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]


@implementer(IOnDemandIssuance)
class IssuanceManager(Service):
    """Orders, renews and retries certificates for the names ``allowed`` (host policy).

    ``reload`` is called after a certificate was stored (the registry's reload). States are
    readable at any time from memory through :meth:`state` / :meth:`states` for the API.
    """

    name = "acme"

    def __init__(
        self,
        reactor: IReactorTime,
        store: IStore,
        wrapper: KeyWrapper,
        issuer: ICertificateIssuer,
        reload: Callable[[], object],
        key_kind: KeyKind = "ecdsa-p256",
        check_interval: float = CHECK_INTERVAL,
        retry_intervals: Sequence[float] = RETRY_INTERVALS,
        jitter: Callable[[], float] = random.random,
        preload: Sequence[Callable[[], Deferred[None]]] = (),
    ) -> None:
        self._reactor = reactor
        self._store = store
        self._wrapper = wrapper
        self._issuer = issuer
        self._reload = reload
        self._key_kind: KeyKind = key_kind
        self._check_interval = check_interval
        self._retry = tuple(retry_intervals)
        self._jitter = jitter
        self._allowed: frozenset[str] = frozenset()
        self._states: dict[str, IssuanceState] = {}
        self._inflight: dict[str, Deferred[None]] = {}
        self._waiters: dict[str, list[Deferred[None]]] = {}
        self._wakeup: IDelayedCall | None = None
        self._preload = tuple(preload)
        self.orders_started = 0

    # time

    @staticmethod
    def now_of(clock: IReactorTime) -> datetime:
        return datetime.fromtimestamp(clock.seconds(), UTC)

    def now(self) -> datetime:
        return self.now_of(self._reactor)

    # reading state (memory only: safe from any request handler)

    def state(self, name: str) -> IssuanceState | None:
        return self._states.get(name)

    def states(self) -> list[IssuanceState]:
        return [self._states[name] for name in sorted(self._states)]

    # policy and requests

    def set_allowed_names(self, names: Iterable[str]) -> None:
        """The host policy: exactly these names may ever be ordered (normalised)."""
        self._allowed = frozenset(names)
        if self.running:
            self._tick()

    def hosts_changed(self) -> Deferred[None]:
        """Re-read the hosts with ``ssl_mode: letsencrypt`` and order what is missing.

        The lead's host API calls this after a host is created, changed or deleted, so a
        certificate is requested before the first visitor arrives.
        """

        def names(txn: Any) -> list[str]:
            return [
                name
                for host in txn.list_hosts()
                if host.ssl_mode == "letsencrypt"
                for name in host.names
                if not name.startswith("*.")  # HTTP-01 cannot validate wildcards
            ]

        return self._store.transact(names).addCallback(self.set_allowed_names)

    def certificate_wanted(self, hostname: str) -> None:
        try:
            name = normalise(hostname, allow_wildcard=False)
        except (InvalidHostname, ValueError):
            return
        try:
            if name in self._allowed and name not in self._inflight:
                self.obtain(name).addErrback(lambda f: None)
        except Exception:  # the handshake path must never see an exception
            log.failure("certificate_wanted failed for {name}", name=name)

    def obtain(self, name: str, force: bool = False) -> Deferred[None]:
        """Obtain or renew ``name`` now if it is due (``force``: even if not yet due).

        Refused (fires with None, nothing ordered) for names outside the host policy and,
        unless forced, before ``next_attempt_at``. Concurrent calls share one order.
        """
        waiter: Deferred[None] = Deferred()
        if name in self._inflight:
            self._waiters[name].append(waiter)
            return waiter
        if name not in self._allowed:
            return succeed(None)
        if not force and not self._due(name, self.now()):
            return succeed(None)
        self._waiters[name] = [waiter]
        running = Deferred.fromCoroutine(self._run(name))
        self._inflight[name] = running

        def done(result: object) -> None:
            self._inflight.pop(name, None)
            if self.running:
                self._schedule()  # before waking waiters: they may move the clock at once
            for each in self._waiters.pop(name, []):
                each.callback(None)

        running.addBoth(done)
        return waiter

    def _due(self, name: str, now: datetime) -> bool:
        state = self._states.get(name)
        if state is None:
            return True
        if state.status == "valid":
            return state.renews_at is None or now >= state.renews_at
        return state.next_attempt_at is None or now >= state.next_attempt_at

    # one attempt

    async def _run(self, name: str) -> None:
        now = self.now()
        wrapper, kind = self._wrapper, self._key_kind
        try:
            key, state = await self._store.transact(
                lambda txn: begin_attempt(txn, wrapper, name, now, kind)
            )
        except CancelledError:
            raise
        except Exception as exc:  # the store cannot record the attempt (disk full, ...)
            self._failed_unrecorded(name, _error_text(exc), now, None)
            return
        self._states[name] = state
        renewing = state.certificate_id is not None
        self.orders_started += 1
        log.info("cert_obtaining name={name} renewal={renewal}", event="cert_obtaining",
                 name=name, renewal=renewing)
        try:
            chain = await self._issuer.issue(build_csr(key, [name]), [name])
            done = self.now()
            state = await self._store.transact(
                lambda txn: finish_success(txn, wrapper, name, chain, key, done)
            )
        except CancelledError:
            raise
        except Exception as exc:
            failed = self.now()
            wait_until = None
            if isinstance(exc, AcmeRateLimited):
                seconds = max(0.0, exc.retry_at - self._reactor.seconds())
                wait_until = failed + timedelta(seconds=math.ceil(seconds))
            error, retry = _error_text(exc), self._retry
            try:
                state = await self._store.transact(
                    lambda txn: finish_failure(txn, name, error, failed, retry, wait_until)
                )
            except CancelledError:
                raise
            except Exception:
                self._failed_unrecorded(name, error, failed, wait_until)
                return
            self._states[name] = state
            self._log_failure(state)
            return
        self._states[name] = state
        event = "cert_renewed" if renewing else "cert_obtained"
        log.info(event + " name={name} certificate_id={certificate_id} renews_at={renews_at}",
                 event=event, name=name, certificate_id=state.certificate_id,
                 renews_at=state.renews_at)
        try:
            await maybeDeferred(self._reload)
        except Exception:
            log.failure("reload after {name} failed", name=name)

    def _failed_unrecorded(self, name: str, error: str, when: datetime,
                           not_before: datetime | None) -> None:
        """A failure the store could not record (disk full): keep the backoff in memory,
        so the schedule waits as it would have, instead of ordering again at once."""
        previous = self._states.get(name) or IssuanceState(name=name)
        state = failed_state(previous, error, when, self._retry, not_before)
        self._states[name] = state
        self._log_failure(state)

    @staticmethod
    def _log_failure(state: IssuanceState) -> None:
        log.warn("cert_failed name={name} failures={failures} next_attempt_at={next} "
                 "error={error}", event="cert_failed", name=state.name,
                 failures=state.failures, next=state.next_attempt_at, error=state.last_error)

    # the timer

    def _schedule(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        now = self.now()
        delay = self._check_interval * (0.9 + 0.2 * self._jitter())
        for name in self._allowed - set(self._inflight):
            state = self._states.get(name)
            if state is None:
                delay = 0.0
                break
            due = state.renews_at if state.status == "valid" else state.next_attempt_at
            if due is None:
                delay = 0.0
                break
            delay = min(delay, max(0.0, (due - now).total_seconds()))
        self._wakeup = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        now = self.now()
        for name in sorted(self._allowed - set(self._inflight)):
            if self._due(name, now):
                self.obtain(name).addErrback(
                    lambda f: log.failure("obtaining a certificate failed", f)
                )
        self._schedule()

    # service

    def startService(self) -> Deferred[None]:
        """Load what must be in memory (challenge answers, states), then read the hosts and
        order whatever is due. Fires when that first pass has been scheduled."""
        Service.startService(self)

        async def start() -> None:
            for load in self._preload:
                await load()
            states = await self._store.transact(lambda txn: txn.list_issuance_states())
            self._states = {state.name: state for state in states}
            await self.hosts_changed()

        return Deferred.fromCoroutine(start())

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        running = list(self._inflight.values())
        for each in running:
            each.cancel()
        return DeferredList(running, consumeErrors=True)


__all__ = ["RETRY_INTERVALS", "IssuanceManager", "renewal_time"]
