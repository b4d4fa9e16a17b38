"""Small shared test helpers (no fakes of our own code live here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aegis.store.records import CertificateFields, HostFields


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
