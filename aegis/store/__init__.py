"""Persistent state. :class:`~aegis.interfaces.IStore` is the contract;
:mod:`aegis.store.sqlite` is the embedded default, :mod:`aegis.store.postgres` the store
several nodes share, and :mod:`aegis.store.memory` the in-memory twin, all held to
``tests/test_store_contract.py``. The SQL both databases run is in
:mod:`aegis.store._sql_txn`; records live in :mod:`aegis.store.records`, errors in
:mod:`aegis.store.errors`."""
