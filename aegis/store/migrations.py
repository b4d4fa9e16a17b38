"""Versioned schema of the SQLite store.

Each entry of :data:`MIGRATIONS` moves the schema one version up and runs inside the same
transaction that records the new ``user_version``, so a crash leaves the old or the new
schema, never half of one. Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
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
)

LATEST_VERSION = len(MIGRATIONS)
