"""Versioned schema of the SQLite store.

Each entry of :data:`MIGRATIONS` moves the schema one version up and runs inside the same
transaction that records the new ``user_version``, so a crash leaves the old or the new
schema, never half of one. Never edit a released migration: append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = str | Callable[[sqlite3.Connection], None]

# The CHECK constraints migration 4 removes: which values are valid is the source
# registry's business (aegis.certs.sources), so a new source needs no schema change.
_REMOVED_CHECKS = (
    ("certificates", "CHECK (source IN ('custom', 'cloudflare_origin', 'letsencrypt'))"),
    ("hosts", "CHECK (ssl_mode IN ('none', 'letsencrypt', 'custom'))"),
    ("issuance_state", "CHECK (status IN ('pending', 'obtaining', 'valid', 'failed'))"),
)

# Migration 4's plain statements, after the CHECK lists are gone (PostgreSQL runs them too).
LIFECYCLE_COLUMNS = (
    "ALTER TABLE issuance_state ADD COLUMN source TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE issuance_state ADD COLUMN names TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE issuance_state ADD COLUMN issuer TEXT",
    "ALTER TABLE issuance_state ADD COLUMN recent_failures TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE issuance_state ADD COLUMN retired_at TEXT",
    "UPDATE issuance_state SET status = 'wanted' WHERE status = 'pending'",
)


def _lifecycle(db: sqlite3.Connection) -> None:
    """4: the lifecycle engine's columns, and no value lists in CHECK constraints.

    SQLite cannot drop a constraint with ALTER TABLE; its documented way for removing CHECK
    constraints (which does not touch stored rows) is to edit the table's SQL in
    ``sqlite_schema`` under ``writable_schema`` and bump ``schema_version``, inside this
    migration's transaction. ``integrity_check`` then proves the schema still parses.
    """
    version = int(db.execute("PRAGMA schema_version").fetchone()[0])
    db.execute("PRAGMA writable_schema = ON")
    try:
        for table, check in _REMOVED_CHECKS:
            (sql,) = db.execute(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if check not in sql:
                raise RuntimeError(f"migration 4: {table} lacks its expected CHECK")
            db.execute(
                "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?",
                (sql.replace(check, ""), table),
            )
        db.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        db.execute("PRAGMA writable_schema = OFF")
    (ok,) = db.execute("PRAGMA integrity_check").fetchone()
    if ok != "ok":
        raise RuntimeError(f"migration 4: integrity_check says {ok}")
    for statement in LIFECYCLE_COLUMNS:
        db.execute(statement)


MIGRATIONS: tuple[Migration, ...] = (
    # 1: settings, certificates, proxy hosts and the names hosts claim.
    """
    CREATE TABLE settings (
        name        TEXT PRIMARY KEY,
        value       TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE certificates (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        uid                 TEXT NOT NULL UNIQUE,
        source              TEXT NOT NULL
                            CHECK (source IN ('custom', 'cloudflare_origin', 'letsencrypt')),
        domains             TEXT NOT NULL,
        chain_pem           TEXT NOT NULL,
        key_sealed          BLOB NOT NULL,
        issuer              TEXT NOT NULL,
        subject             TEXT NOT NULL,
        not_before          TEXT NOT NULL,
        not_after           TEXT NOT NULL,
        fingerprint_sha256  TEXT NOT NULL,
        key_type            TEXT NOT NULL,
        chain_complete      INTEGER NOT NULL,
        auto_renew          INTEGER NOT NULL DEFAULT 0,
        source_ref          TEXT,
        extra               TEXT NOT NULL DEFAULT '{}',
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL
    );
    CREATE TABLE hosts (
        id                       INTEGER PRIMARY KEY AUTOINCREMENT,
        domain                   TEXT NOT NULL UNIQUE,
        aliases                  TEXT NOT NULL DEFAULT '[]',
        upstream                 TEXT NOT NULL,
        ssl_mode                 TEXT NOT NULL
                                 CHECK (ssl_mode IN ('none', 'letsencrypt', 'custom')),
        ssl_cert_id              INTEGER REFERENCES certificates(id) ON DELETE RESTRICT,
        force_https              INTEGER NOT NULL DEFAULT 0,
        hsts_enabled             INTEGER NOT NULL DEFAULT 0,
        hsts_max_age             INTEGER NOT NULL DEFAULT 31536000,
        hsts_include_subdomains  INTEGER NOT NULL DEFAULT 0,
        hsts_preload             INTEGER NOT NULL DEFAULT 0,
        tls_min_version          TEXT NOT NULL DEFAULT '1.2'
                                 CHECK (tls_min_version IN ('1.2', '1.3')),
        extra                    TEXT NOT NULL DEFAULT '{}',
        created_at               TEXT NOT NULL,
        updated_at               TEXT NOT NULL
    );
    CREATE INDEX hosts_by_certificate ON hosts (ssl_cert_id);
    CREATE TABLE host_names (
        name     TEXT PRIMARY KEY,
        host_id  INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE
    );
    """,
    # 2: automatic issuance state per name, and HTTP-01 answers being served (ACME).
    """
    CREATE TABLE issuance_state (
        name                TEXT PRIMARY KEY,
        status              TEXT NOT NULL
                            CHECK (status IN ('pending', 'obtaining', 'valid', 'failed')),
        certificate_id      INTEGER,
        failures            INTEGER NOT NULL DEFAULT 0,
        last_attempt_at     TEXT,
        last_error          TEXT,
        next_attempt_at     TEXT,
        renews_at           TEXT,
        order_url           TEXT,
        pending_key_sealed  BLOB,
        updated_at          TEXT NOT NULL
    );
    CREATE TABLE acme_challenges (
        token              TEXT PRIMARY KEY,
        key_authorization  TEXT NOT NULL,
        name               TEXT NOT NULL,
        created_at         TEXT NOT NULL
    );
    """,
    # 3: whether an https upstream's certificate is verified (default: yes).
    """
    ALTER TABLE hosts ADD COLUMN upstream_tls_verify INTEGER NOT NULL DEFAULT 1;
    """,
    _lifecycle,
)

LATEST_VERSION = len(MIGRATIONS)
