"""aegis.store.copy: an SQLite database copied into PostgreSQL reads back identically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aegis.store._runner import immediate_runner
from aegis.store.copy import CopyRefused, copy_database
from aegis.store.postgres import PostgresStore
from aegis.store.records import AcmeChallenge, IssuanceState
from aegis.store.sqlite import SQLiteStore
from tests.helpers import certificate_fields, host_fields

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def _everything(txn: Any) -> dict[str, Any]:
    return {
        "settings": [txn.get_setting(name) for name in ("ssl_key_check", "acme", "other")],
        "certificates": txn.list_certificates(),
        "hosts": txn.list_hosts(),
        "issuance": txn.list_issuance_states(),
        "challenges": txn.list_acme_challenges(),
    }


def _fill(txn: Any) -> None:
    txn.set_setting("ssl_key_check", "c2VhbGVk")
    txn.set_setting("acme", "sealed-account-key")
    dropped = txn.add_certificate(certificate_fields(("gone.example.com",)))
    kept = txn.add_certificate(certificate_fields(("a.example.com",), sealed=b"\x02sealed"))
    last = txn.add_certificate(certificate_fields(("z.example.com",)))
    txn.add_host(host_fields("a.example.com", aliases=("www.a.example.com",),
                             ssl_mode="custom", ssl_cert_id=kept.id))
    txn.add_host(host_fields("b.example.com", ssl_mode="letsencrypt"))
    txn.delete_certificate(dropped.id)
    txn.delete_certificate(last.id)  # the high-water mark is now above every stored id
    txn.put_issuance_state(IssuanceState(
        name="b.example.com", status="failed", failures=2, last_attempt_at=T0,
        pending_key_sealed=b"\x03sealed", source="letsencrypt", names=("b.example.com",),
        recent_failures=(T0,),
    ))
    txn.put_acme_challenge(AcmeChallenge(token="tok", key_authorization="tok.thumb",
                                         name="b.example.com", created_at=T0))


@pytest.fixture
def stores(tmp_path: Path, postgres_url: str) -> Any:
    source = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    target = PostgresStore.open(postgres_url, immediate_runner)
    yield source, target
    source.close()
    target.close()


def test_copy_is_identical_and_keeps_ids(stores: Any) -> None:
    source, target = stores
    source.transact_blocking(_fill)
    report = copy_database(source, target)
    assert report.counts["certificates"] == 1 and report.counts["host_names"] == 3
    assert target.transact_blocking(_everything) == source.transact_blocking(_everything)
    # ids continue after SQLite's high-water mark: a deleted id is not handed out again
    new = target.transact_blocking(lambda t: t.add_certificate(certificate_fields()))
    assert new.id == 4
    hosts = target.transact_blocking(lambda t: t.list_hosts())
    assert target.transact_blocking(lambda t: t.add_host(host_fields("c.example.com"))).id == (
        hosts[-1].id + 1)


def test_non_empty_target_refused_unless_forced(stores: Any) -> None:
    source, target = stores
    source.transact_blocking(_fill)
    target.transact_blocking(lambda t: t.add_host(host_fields("already.example.com")))
    with pytest.raises(CopyRefused) as caught:
        copy_database(source, target)
    assert "not empty" in str(caught.value) and "hosts (1)" in str(caught.value)
    assert [h.domain for h in target.transact_blocking(lambda t: t.list_hosts())] == [
        "already.example.com"]
    copy_database(source, target, force=True)
    assert target.transact_blocking(_everything) == source.transact_blocking(_everything)


def test_empty_source_copies(stores: Any) -> None:
    source, target = stores
    assert set(copy_database(source, target).counts.values()) == {0}
    assert target.transact_blocking(lambda t: t.add_certificate(certificate_fields())).id == 1
