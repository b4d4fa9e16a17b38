"""The lifecycle engine's state and the rules that read it, shared by its parts.

:class:`EngineBase` holds what every part of :class:`~.engine.LifecycleEngine` works on —
the demand, the per-set states, the attempts in flight — and the memory-only reads the
admin API uses, plus when a set is due. The parts (:mod:`._demand_sync`, :mod:`._controls`,
:mod:`._advice_pass`) and the engine itself (attempts and the timer) build on it; the
methods they call on each other are declared here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from aegis.certs.lifecycle.advice import AdviceBook
from aegis.certs.lifecycle.budget import FailureBudget
from aegis.certs.lifecycle.demand import Demand
from aegis.crypto.keywrap import KeyWrapper
from aegis.events import EventPublisher
from aegis.interfaces import ICertificateIssuer, IStore
from aegis.store.records import IssuanceState

ACTIVE = frozenset({"obtaining", "renewing"})


def error_text(exc: BaseException) -> str:
    """One line for ``last_error``: our exceptions never carry secrets; cut to 500 chars."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]


class EngineBase(Service):
    """The engine's shared state; see :class:`aegis.certs.lifecycle.LifecycleEngine`."""

    _clock: IReactorTime
    _store: IStore
    _wrapper: KeyWrapper
    _issuers: dict[str, ICertificateIssuer]
    _reload: Callable[[], object]
    events: EventPublisher
    _check_interval: float
    _retry: tuple[float, ...]
    _budget: FailureBudget
    _max_concurrent: int
    _jitter: Callable[[], float]
    _preload: Sequence[Callable[[], Deferred[None]]]
    _demand: dict[str, Demand]
    _states: dict[str, IssuanceState]
    _certificate_ids: set[int]
    _inflight: dict[str, Deferred[None]]
    _waiters: dict[str, list[Deferred[None]]]
    _wakeup: IDelayedCall | None
    _refresh_lock: DeferredLock
    _queued_refresh: list[Deferred[None]] | None  # callers of the refresh waiting to start
    _refreshed_at: float
    advice: AdviceBook

    # what the parts call on each other (defined where they belong)

    @abstractmethod
    def obtain(self, key: str, force: bool = False) -> Deferred[None]:
        """Start an attempt for ``key`` (the engine)."""

    @abstractmethod
    def refresh(self) -> Deferred[None]:
        """Re-read the demand (:mod:`._demand_sync`)."""

    @abstractmethod
    def _tick(self) -> None:
        """Start what is due and set the timer (the engine)."""

    @abstractmethod
    def _schedule(self) -> None:
        """Set the timer (the engine)."""

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

    # when a set is due

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


__all__ = ["ACTIVE", "EngineBase", "error_text"]
