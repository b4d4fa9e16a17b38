"""The ACME order journal in the store: the order URL of a name set in flight.

Kept in the lifecycle's row of the set (``IssuanceState.order_url``, key = the first name),
so a restart resumes the same order instead of creating another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from twisted.internet.defer import Deferred

from aegis.interfaces import IStore, IStoreTransaction
from aegis.store.records import IssuanceState


class StoreOrderJournal:
    """:class:`aegis.sources.acme.issuer.OrderJournal` kept in the first name's state."""

    def __init__(self, store: IStore) -> None:
        self._store = store

    def current_order(self, names: Sequence[str]) -> Deferred[str | None]:
        def work(txn: IStoreTransaction) -> str | None:
            state = txn.get_issuance_state(names[0])
            return None if state is None else state.order_url

        return self._store.transact(work)

    def record_order(self, names: Sequence[str], url: str | None) -> Deferred[None]:
        def work(txn: IStoreTransaction) -> None:
            state = txn.get_issuance_state(names[0]) or IssuanceState(name=names[0])
            txn.put_issuance_state(replace(state, order_url=url))

        return self._store.transact(work)
