"""Persistent state. :class:`~aegis.interfaces.IStore` is the contract;
:mod:`aegis.store.sqlite` is the embedded default and :mod:`aegis.store.memory` its in-memory
twin, both held to ``tests/store_contract.py``. Records live in :mod:`aegis.store.records`,
errors in :mod:`aegis.store.errors`."""
