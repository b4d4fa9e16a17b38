"""The operator's controls: "retry now", "renew now", and the reset after a forced delete.

The failed-validation budget holds even then (the CA's limit does not care who asked):
``next_attempt_at`` says when the next attempt may start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from twisted.internet.defer import Deferred

from aegis import events
from aegis.certs.lifecycle import transitions
from aegis.certs.lifecycle._base import EngineBase
from aegis.interfaces import IStoreTransaction
from aegis.store.records import IssuanceState


class OperatorControls(EngineBase):
    """Retry and reset (a part of :class:`~.engine.LifecycleEngine`)."""

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
