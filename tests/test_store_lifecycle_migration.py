"""Migration 4 on a real SQLite file written at schema version 3 (the last release's).

It must keep every row, turn ``pending`` issuance states into ``wanted``, add the lifecycle
columns, and drop the CHECK value lists, so a source registered later (one module plus a
registration line) stores certificates without a schema change.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aegis.certs import sources
from aegis.certs.sources import DOMAIN_MATCH, SourceSpec
from aegis.store._runner import immediate_runner
from aegis.store.migrations import MIGRATIONS
from aegis.store.sqlite import SQLiteStore
from tests.helpers import certificate_fields


def _version_3_database(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True)
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        assert isinstance(migration, str)
        db.executescript(migration)
    db.execute("PRAGMA user_version = 3")
    db.execute(
        "INSERT INTO certificates (uid, source, domains, chain_pem, key_sealed, issuer, "
        "subject, not_before, not_after, fingerprint_sha256, key_type, chain_complete, "
        "created_at, updated_at) VALUES ('u1', 'custom', '[\"a.example.com\"]', 'PEM', "
        "x'01', 'CA', 'CN=a', '2026-01-01T00:00:00Z', '2027-01-01T00:00:00Z', 'ff', "
        "'ecdsa-p256', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    db.execute(
        "INSERT INTO hosts (domain, upstream, ssl_mode, ssl_cert_id, created_at, updated_at) "
        "VALUES ('a.example.com', 'http://127.0.0.1:1', 'custom', 1, '2026-01-01T00:00:00Z', "
        "'2026-01-01T00:00:00Z')")
    db.execute("INSERT INTO issuance_state (name, status, updated_at) VALUES "
               "('b.example.com', 'pending', '2026-01-01T00:00:00Z')")
    db.commit()
    with pytest.raises(sqlite3.IntegrityError):  # what migration 4 removes
        db.execute(
            "INSERT INTO certificates (uid, source, domains, chain_pem, key_sealed, issuer, "
            "subject, not_before, not_after, fingerprint_sha256, key_type, chain_complete, "
            "created_at, updated_at) VALUES ('u2', 'vault', '[]', 'PEM', x'01', 'CA', 'CN=a', "
            "'x', 'x', 'ff', 'k', 1, 'x', 'x')")
    db.close()


def test_migration_4_keeps_rows_and_drops_the_value_lists(tmp_path: Path) -> None:
    path = tmp_path / "data" / "aegis.db"
    _version_3_database(path)
    store = SQLiteStore.open(path, immediate_runner)
    try:
        assert store.schema_version() == len(MIGRATIONS) >= 4
        (cert,) = store.transact_blocking(lambda t: t.list_certificates())
        (host,) = store.transact_blocking(lambda t: t.list_hosts())
        assert cert.uid == "u1" and host.ssl_cert_id == cert.id
        state = store.transact_blocking(lambda t: t.get_issuance_state("b.example.com"))
        assert state is not None and state.status == "wanted"
        assert state.source == "" and state.names == () and state.recent_failures == ()
        spec = sources.register(SourceSpec(name="vault", label="Vault PKI",
                                           selection_step=DOMAIN_MATCH))
        try:
            added = store.transact_blocking(
                lambda t: t.add_certificate(certificate_fields(("v.example.com",),
                                                               source=spec.name)))
            assert added.source == "vault"
        finally:
            sources.unregister("vault")
        schema = sqlite3.connect(path).execute(
            "SELECT group_concat(sql) FROM sqlite_schema").fetchone()[0]
        assert "CHECK (source IN" not in schema and "CHECK (status IN" not in schema
        assert "CHECK (ssl_mode IN" not in schema
        assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()


def test_unknown_source_refused_by_the_registry_not_the_schema() -> None:
    with pytest.raises(ValueError, match="unknown certificate source 'vault'"):
        certificate_fields(source="vault")
