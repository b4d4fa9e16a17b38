"""The store methods the ACME source added (migration 2), against every store.

Same shape as ``test_store_contract`` and on the same ``STORES`` (SQLite, in memory,
PostgreSQL), so all behave the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aegis.store._runner import immediate_runner
from aegis.store.records import AcmeChallenge, IssuanceState
from aegis.store.sqlite import SQLiteStore
from tests.test_store_contract import STORES

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = STORES[request.param](request, tmp_path)
    yield opened
    opened.close()


def test_issuance_state_roundtrip(store: Any) -> None:
    assert store.transact_blocking(lambda t: t.get_issuance_state("a.test")) is None
    state = IssuanceState(
        name="a.test",
        status="failed",
        certificate_id=7,
        failures=3,
        last_attempt_at=T0,
        last_error="ACME rateLimited (HTTP 429): slow down",
        next_attempt_at=T0 + timedelta(seconds=3600, microseconds=5),
        renews_at=T0 + timedelta(days=60),
        order_url="https://ca/order/1",
        pending_key_sealed=b"\x01sealed",
    )
    store.transact_blocking(lambda t: t.put_issuance_state(state))
    got = store.transact_blocking(lambda t: t.get_issuance_state("a.test"))
    assert got.status == "failed"
    assert got.certificate_id == 7
    assert got.failures == 3
    assert got.last_attempt_at == T0
    assert got.next_attempt_at == T0 + timedelta(seconds=3600)  # whole seconds
    assert got.renews_at == T0 + timedelta(days=60)
    assert got.order_url == "https://ca/order/1"
    assert got.pending_key_sealed == b"\x01sealed"
    assert got.last_error == state.last_error


def test_issuance_state_overwrite_list_delete(store: Any) -> None:
    for name in ("b.test", "a.test"):
        store.transact_blocking(lambda t, n=name: t.put_issuance_state(IssuanceState(name=n)))
    store.transact_blocking(
        lambda t: t.put_issuance_state(IssuanceState(name="b.test", status="valid"))
    )
    states = store.transact_blocking(lambda t: t.list_issuance_states())
    assert [(s.name, s.status) for s in states] == [("a.test", "wanted"), ("b.test", "valid")]
    assert states[0].last_attempt_at is None and states[0].pending_key_sealed is None
    store.transact_blocking(lambda t: t.delete_issuance_state("a.test"))
    store.transact_blocking(lambda t: t.delete_issuance_state("a.test"))
    assert [s.name for s in store.transact_blocking(lambda t: t.list_issuance_states())] == [
        "b.test"
    ]


def test_unknown_status_refused() -> None:
    with pytest.raises(ValueError, match="status"):
        IssuanceState(name="a.test", status="weird")


def test_pending_key_not_in_repr() -> None:
    assert "secret" not in repr(IssuanceState(name="a", pending_key_sealed=b"secret"))


def test_challenges_roundtrip(store: Any) -> None:
    one = AcmeChallenge(
        token="tok_B", key_authorization="tok_B.thumb", name="a.test", created_at=T0
    )
    two = AcmeChallenge(
        token="tok_A", key_authorization="tok_A.thumb", name="b.test", created_at=T0
    )
    store.transact_blocking(lambda t: t.put_acme_challenge(one))
    store.transact_blocking(lambda t: t.put_acme_challenge(two))
    store.transact_blocking(lambda t: t.put_acme_challenge(two))
    assert store.transact_blocking(lambda t: t.list_acme_challenges()) == [two, one]
    store.transact_blocking(lambda t: t.delete_acme_challenge("tok_A"))
    store.transact_blocking(lambda t: t.delete_acme_challenge("tok_A"))
    assert store.transact_blocking(lambda t: t.list_acme_challenges()) == [one]


def test_rollback_covers_acme_tables(store: Any) -> None:
    class Boom(Exception):
        pass

    def half(txn: Any) -> None:
        txn.put_issuance_state(IssuanceState(name="a.test"))
        txn.put_acme_challenge(
            AcmeChallenge(token="t", key_authorization="t.x", name="a.test", created_at=T0)
        )
        raise Boom

    with pytest.raises(Boom):
        store.transact_blocking(half)
    assert store.transact_blocking(lambda t: t.list_issuance_states()) == []
    assert store.transact_blocking(lambda t: t.list_acme_challenges()) == []


def test_schema_has_migration_two(store: Any) -> None:
    assert store.schema_version() >= 2


def test_version_one_database_migrates(tmp_path: Path) -> None:
    """A database written by the first release gains the ACME tables, data intact."""
    import sqlite3

    from aegis.store.migrations import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO settings VALUES ('x', '1', '2026-01-01T00:00:00Z')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = SQLiteStore.open(path, immediate_runner)
    try:
        assert store.schema_version() >= 2
        assert store.transact_blocking(lambda t: t.get_setting("x")) == "1"
        assert store.transact_blocking(lambda t: t.list_issuance_states()) == []
    finally:
        store.close()
