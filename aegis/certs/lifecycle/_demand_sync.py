"""Keeping the engine's demand in step with hosts and certificates (retire, revive).

A refresh reads hosts, certificates and states in one transaction, computes the demand
(:mod:`.demand`), and records in a second one what is newly wanted (``revive``) and what no
host wants any more (``retire``: an attempt in flight is cancelled and its issuer told to
abandon the order). When the store cannot record (disk full) the demand still holds in
memory, so wanted names are obtained all the same.
"""

from __future__ import annotations

from datetime import datetime

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from aegis import events
from aegis.certs.lifecycle import transitions
from aegis.certs.lifecycle._base import EngineBase, error_text
from aegis.certs.lifecycle.demand import Demand, DemandInputs, coverage, demanded
from aegis.interfaces import IStoreTransaction
from aegis.store.records import IssuanceState

log = Logger(namespace="aegis.certs.lifecycle.engine")


class Refresh:
    """What one demand refresh found, computed inside its store transaction."""

    def __init__(self) -> None:
        self.demand: dict[str, Demand] = {}
        self.states: dict[str, IssuanceState] = {}
        self.certificate_ids: set[int] = set()
        self.retired: list[IssuanceState] = []
        self.revived: list[IssuanceState] = []


class DemandSync(EngineBase):
    """The engine's demand refresh (a part of :class:`~.engine.LifecycleEngine`)."""


    def refresh(self) -> Deferred[None]:
        """Re-read hosts and certificates, retire what is no longer wanted, take up what is
        newly wanted, and start whatever is due. Serialised; idempotent.

        Calls while a refresh is queued (waiting for the one running) join it: it has not
        read the store yet, so it sees their changes too. A host write's reload and its
        answer (which waits for the new demand) then cost one refresh, not two."""
        waiter: Deferred[None] = Deferred()
        if self._queued_refresh is not None:
            self._queued_refresh.append(waiter)
            return waiter
        self._queued_refresh = [waiter]

        def run() -> Deferred[None]:
            waiters, self._queued_refresh = self._queued_refresh or [], None

            def fire(result: object) -> None:
                for each in waiters:
                    if isinstance(result, Failure):
                        each.errback(result)
                    else:
                        each.callback(None)

            return Deferred.fromCoroutine(self._refresh()).addBoth(fire)

        self._refresh_lock.run(run)
        return waiter

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
