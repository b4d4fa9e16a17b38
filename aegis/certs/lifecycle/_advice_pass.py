"""The renewal-advice pass: asking a CA that suggests renewal windows (ACME ARI) about
each valid certificate it made, and moving the renewal time when the window moves.

Runs on the engine's timer; what was asked when is kept in :class:`.advice.AdviceBook`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from aegis.certs.lifecycle import transitions
from aegis.certs.lifecycle._base import EngineBase, error_text
from aegis.interfaces import IRenewalAdvisor

log = Logger(namespace="aegis.certs.lifecycle.engine")


class AdvicePass(EngineBase):
    """Renewal advice (a part of :class:`~.engine.LifecycleEngine`)."""


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
