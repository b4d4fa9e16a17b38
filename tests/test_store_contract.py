"""The IStore contract, run against every store: SQLite file, in-memory, and PostgreSQL
(a real server, started once per session by ``tests/pg_fixtures.py``).

A new store must pass this same module: add it to ``STORES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from aegis.interfaces import IStore, IStoreTransaction
from aegis.store._runner import immediate_runner
from aegis.store.errors import Conflict, NotFound
from aegis.store.memory import MemoryStore
from aegis.store.postgres import PostgresStore
from aegis.store.sqlite import SQLiteStore
from tests.helpers import certificate_fields, host_fields


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return SQLiteStore.open(tmp_path / "data" / "aegis.db", immediate_runner)


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return MemoryStore()


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return PostgresStore.open(request.getfixturevalue("postgres_url"), immediate_runner)


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {
    "sqlite": _sqlite, "memory": _memory, "postgres": _postgres,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = STORES[request.param](request, tmp_path)
    yield opened
    opened.close()


def run(store: Any, work: Callable[[Any], Any]) -> Any:
    return store.transact_blocking(work)


class Boom(Exception):
    pass


def test_provides_interfaces(store: Any) -> None:
    assert verifyObject(IStore, store)
    run(store, lambda txn: verifyObject(IStoreTransaction, txn))


def test_settings_roundtrip(store: Any) -> None:
    assert run(store, lambda t: t.get_setting("x")) is None
    run(store, lambda t: t.set_setting("x", "1"))
    run(store, lambda t: t.set_setting("x", "2"))
    assert run(store, lambda t: t.get_setting("x")) == "2"
    run(store, lambda t: t.delete_setting("x"))
    run(store, lambda t: t.delete_setting("x"))
    assert run(store, lambda t: t.get_setting("x")) is None


def test_failed_transaction_changes_nothing(store: Any) -> None:
    run(store, lambda t: t.set_setting("count", "0"))

    def half_done(txn: Any) -> None:
        txn.set_setting("count", "1")
        txn.add_certificate(certificate_fields())
        txn.add_host(host_fields())
        raise Boom

    with pytest.raises(Boom):
        run(store, half_done)
    assert run(store, lambda t: t.get_setting("count")) == "0"
    assert run(store, lambda t: t.list_certificates()) == []
    assert run(store, lambda t: t.list_hosts()) == []


def test_certificate_lifecycle(store: Any) -> None:
    fields = certificate_fields(("a.example.com", "*.example.com"))
    record = run(store, lambda t: t.add_certificate(fields))
    assert record.id >= 1
    assert record.domains == ("a.example.com", "*.example.com")
    assert record.key_sealed == fields.key_sealed
    assert record.extra == {"note": "public"}
    assert record.created_at.tzinfo is not None
    assert run(store, lambda t: t.get_certificate(record.id)) == record
    assert [r.id for r in run(store, lambda t: t.list_certificates())] == [record.id]

    renewed = replace(fields, domains=("a.example.com",), fingerprint_sha256="cd" * 32)
    replaced = run(store, lambda t: t.replace_certificate(record.id, renewed))
    assert replaced.id == record.id
    assert replaced.created_at == record.created_at
    assert replaced.fingerprint_sha256 == "cd" * 32
    assert replaced.fields() == renewed

    run(store, lambda t: t.delete_certificate(record.id))
    with pytest.raises(NotFound):
        run(store, lambda t: t.get_certificate(record.id))
    with pytest.raises(NotFound):
        run(store, lambda t: t.delete_certificate(record.id))
    with pytest.raises(NotFound):
        run(store, lambda t: t.replace_certificate(record.id, renewed))


def test_certificate_uid_unique(store: Any) -> None:
    run(store, lambda t: t.add_certificate(certificate_fields(uid="same")))
    with pytest.raises(Conflict) as caught:
        run(store, lambda t: t.add_certificate(certificate_fields(uid="same")))
    assert caught.value.field == "uid"


def test_ids_not_reused(store: Any) -> None:
    first = run(store, lambda t: t.add_certificate(certificate_fields()))
    run(store, lambda t: t.delete_certificate(first.id))
    second = run(store, lambda t: t.add_certificate(certificate_fields()))
    assert second.id > first.id


def test_host_lifecycle_and_binding(store: Any) -> None:
    cert = run(store, lambda t: t.add_certificate(certificate_fields()))
    host = run(store, lambda t: t.add_host(host_fields(
        aliases=("www.example.com",), ssl_mode="custom", ssl_cert_id=cert.id, force_https=True,
        tls_min_version="1.3",
    )))
    assert host.names == ("app.example.com", "www.example.com")
    assert host.tls_min_version == "1.3"
    assert run(store, lambda t: t.hosts_using_certificate(cert.id)) == [host]

    with pytest.raises(Conflict) as caught:
        run(store, lambda t: t.delete_certificate(cert.id))
    assert "app.example.com" in str(caught.value)
    assert run(store, lambda t: t.get_certificate(cert.id)).id == cert.id

    unbound = replace(host.fields(), ssl_mode="none", ssl_cert_id=None)
    updated = run(store, lambda t: t.replace_host(host.id, unbound))
    assert updated.ssl_cert_id is None and updated.created_at == host.created_at
    run(store, lambda t: t.delete_certificate(cert.id))
    run(store, lambda t: t.delete_host(host.id))
    assert run(store, lambda t: t.list_hosts()) == []
    with pytest.raises(NotFound):
        run(store, lambda t: t.delete_host(host.id))


def test_host_names_are_exclusive(store: Any) -> None:
    run(store, lambda t: t.add_host(host_fields("a.example.com", aliases=("b.example.com",))))
    with pytest.raises(Conflict) as caught:
        run(store, lambda t: t.add_host(host_fields("b.example.com")))
    assert caught.value.field == "domain"
    with pytest.raises(Conflict) as caught:
        run(store, lambda t: t.add_host(host_fields("c.example.com", aliases=("a.example.com",))))
    assert caught.value.field == "aliases"
    with pytest.raises(Conflict):
        run(store, lambda t: t.add_host(host_fields("d.example.com", aliases=("d.example.com",))))
    # a host may keep its own names when it is replaced
    first = run(store, lambda t: t.list_hosts())[0]
    again = run(store, lambda t: t.replace_host(first.id, first.fields()))
    assert again.names == first.names
    # freed names can be claimed again
    run(store, lambda t: t.delete_host(first.id))
    run(store, lambda t: t.add_host(host_fields("b.example.com")))


def test_host_with_unknown_certificate_refused(store: Any) -> None:
    with pytest.raises(Conflict) as caught:
        run(store, lambda t: t.add_host(host_fields(ssl_mode="custom", ssl_cert_id=999)))
    assert caught.value.field == "ssl_cert_id"
    assert run(store, lambda t: t.list_hosts()) == []


def test_get_unknown_host(store: Any) -> None:
    with pytest.raises(NotFound):
        run(store, lambda t: t.get_host(42))
    with pytest.raises(NotFound):
        run(store, lambda t: t.replace_host(42, host_fields()))


def test_transact_returns_deferred_result(store: Any) -> None:
    results: list[Any] = []
    store.transact(lambda t: t.set_setting("k", "v") or "done").addCallback(results.append)
    assert results == ["done"]
    failures: list[Any] = []
    store.transact(lambda t: (_ for _ in ()).throw(Boom())).addErrback(failures.append)
    assert failures and failures[0].check(Boom)


def test_schema_version(store: Any) -> None:
    from aegis.store.migrations import LATEST_VERSION

    assert store.schema_version() == LATEST_VERSION


def test_host_settings_roundtrip(store: Any) -> None:
    fields = host_fields(
        upstream="https://backend.internal:8443", upstream_tls_verify=False, hsts_enabled=True,
        hsts_max_age=63072000, hsts_include_subdomains=True, hsts_preload=True,
    )
    host = run(store, lambda t: t.add_host(fields))
    assert host.fields() == fields
    assert run(store, lambda t: t.get_host(host.id)).upstream_tls_verify is False


def test_conflict_leaves_the_transaction_usable(store: Any) -> None:
    """A caller may catch a Conflict and go on in the same transaction (PostgreSQL aborts a
    transaction after a failed statement unless the store guards it)."""
    run(store, lambda t: t.add_certificate(certificate_fields(uid="taken")))
    run(store, lambda t: t.add_host(host_fields("taken.example.com")))

    def try_then_carry_on(txn: Any) -> int:
        with pytest.raises(Conflict):
            txn.add_certificate(certificate_fields(uid="taken"))
        with pytest.raises(Conflict):
            txn.add_host(host_fields("taken.example.com"))
        txn.set_setting("after", "yes")
        return int(txn.add_certificate(certificate_fields(uid="fresh")).id)

    fresh = run(store, try_then_carry_on)
    assert run(store, lambda t: t.get_certificate(fresh).uid) == "fresh"
    assert run(store, lambda t: t.get_setting("after")) == "yes"
