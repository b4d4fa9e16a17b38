"""Small shared test helpers (no fakes of our own code live here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aegis.store.errors import StoreFull
from aegis.store.records import CertificateFields, HostFields
from aegis.store.sqlite import SQLiteStore


def certificate_fields(
    domains: tuple[str, ...] = ("app.example.com",),
    source: str = "custom",
    uid: str | None = None,
    sealed: bytes = b"\x01" + b"\x00" * 40,
) -> CertificateFields:
    """Plausible certificate fields for storage tests (the store does not parse PEM)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return CertificateFields(
        uid=uid or uuid.uuid4().hex,
        source=source,
        domains=domains,
        chain_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        key_sealed=sealed,
        issuer="Test CA",
        subject=f"CN={domains[0]}",
        not_before=now,
        not_after=now + timedelta(days=90),
        fingerprint_sha256="ab" * 32,
        key_type="ecdsa-p256",
        chain_complete=True,
        extra={"note": "public"},
    )


def host_fields(domain: str = "app.example.com", **changes: object) -> HostFields:
    values: dict[str, object] = {"domain": domain, "upstream": "http://127.0.0.1:3000"}
    values.update(changes)
    return HostFields(**values)  # type: ignore[arg-type]


def fill_database(store: SQLiteStore, *, to_the_brim: bool = False) -> None:
    """Cap the database at its current size (SQLite's max_page_count): a write that needs
    a new page fails with SQLITE_FULL, as on a full disk. ``to_the_brim`` also uses up the
    free room left in the existing pages, so any write that grows the database fails."""

    def cap(txn: object) -> None:
        db = txn._db  # type: ignore[attr-defined]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")

    store.transact_blocking(cap)
    if to_the_brim:
        count = 0
        for size in (16384, 1024, 64, 8):
            while True:
                count += 1
                name, value = f"filler-{count}", "x" * size
                try:
                    store.transact_blocking(
                        lambda txn, name=name, value=value: txn.set_setting(name, value))
                except StoreFull:
                    break
