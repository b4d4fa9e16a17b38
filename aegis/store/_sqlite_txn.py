"""The SQL behind :class:`aegis.interfaces.IStoreTransaction` for SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any

from zope.interface import implementer

from aegis.interfaces import IStoreTransaction
from aegis.store.errors import Conflict, NotFound
from aegis.store.records import (
    AcmeChallenge,
    CertificateFields,
    CertificateRecord,
    HostFields,
    HostRecord,
    IssuanceState,
)
from aegis.timefmt import from_text, to_text

# Column names reach SQL text only from these constants, never from input (the f-strings
# below are marked for ruff S608 and bandit B608 for that reason); values are bound with ?.
_CERT_COLUMNS = (
    "uid", "source", "domains", "chain_pem", "key_sealed", "issuer", "subject", "not_before",
    "not_after", "fingerprint_sha256", "key_type", "chain_complete", "auto_renew", "source_ref",
    "extra",
)
_HOST_COLUMNS = (
    "domain", "aliases", "upstream", "ssl_mode", "ssl_cert_id", "force_https", "hsts_enabled",
    "hsts_max_age", "hsts_include_subdomains", "hsts_preload", "tls_min_version", "extra",
    "upstream_tls_verify",
)


def _cert_values(fields: CertificateFields) -> list[Any]:
    return [
        fields.uid, fields.source, json.dumps(list(fields.domains)), fields.chain_pem,
        fields.key_sealed, fields.issuer, fields.subject, to_text(fields.not_before),
        to_text(fields.not_after), fields.fingerprint_sha256, fields.key_type,
        int(fields.chain_complete), int(fields.auto_renew), fields.source_ref,
        json.dumps(dict(fields.extra), sort_keys=True),
    ]


def _cert_from_row(row: sqlite3.Row) -> CertificateRecord:
    return CertificateRecord(
        id=row["id"], uid=row["uid"], source=row["source"],
        domains=tuple(json.loads(row["domains"])), chain_pem=row["chain_pem"],
        key_sealed=bytes(row["key_sealed"]), issuer=row["issuer"], subject=row["subject"],
        not_before=from_text(row["not_before"]), not_after=from_text(row["not_after"]),
        fingerprint_sha256=row["fingerprint_sha256"], key_type=row["key_type"],
        chain_complete=bool(row["chain_complete"]), auto_renew=bool(row["auto_renew"]),
        source_ref=row["source_ref"], extra=json.loads(row["extra"]),
        created_at=from_text(row["created_at"]), updated_at=from_text(row["updated_at"]),
    )


def _host_values(fields: HostFields) -> list[Any]:
    return [
        fields.domain, json.dumps(list(fields.aliases)), fields.upstream, fields.ssl_mode,
        fields.ssl_cert_id, int(fields.force_https), int(fields.hsts_enabled),
        fields.hsts_max_age, int(fields.hsts_include_subdomains), int(fields.hsts_preload),
        fields.tls_min_version, json.dumps(dict(fields.extra), sort_keys=True),
        int(fields.upstream_tls_verify),
    ]


def _host_from_row(row: sqlite3.Row) -> HostRecord:
    return HostRecord(
        id=row["id"], domain=row["domain"], aliases=tuple(json.loads(row["aliases"])),
        upstream=row["upstream"], ssl_mode=row["ssl_mode"], ssl_cert_id=row["ssl_cert_id"],
        force_https=bool(row["force_https"]), hsts_enabled=bool(row["hsts_enabled"]),
        hsts_max_age=row["hsts_max_age"],
        hsts_include_subdomains=bool(row["hsts_include_subdomains"]),
        hsts_preload=bool(row["hsts_preload"]), tls_min_version=row["tls_min_version"],
        extra=json.loads(row["extra"]), upstream_tls_verify=bool(row["upstream_tls_verify"]),
        created_at=from_text(row["created_at"]), updated_at=from_text(row["updated_at"]),
    )


def _text_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def _moment_or_none(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


def _issuance_from_row(row: sqlite3.Row) -> IssuanceState:
    sealed = row["pending_key_sealed"]
    return IssuanceState(
        name=row["name"], status=row["status"], certificate_id=row["certificate_id"],
        failures=row["failures"], last_attempt_at=_moment_or_none(row["last_attempt_at"]),
        last_error=row["last_error"], next_attempt_at=_moment_or_none(row["next_attempt_at"]),
        renews_at=_moment_or_none(row["renews_at"]), order_url=row["order_url"],
        pending_key_sealed=None if sealed is None else bytes(sealed),
    )


@implementer(IStoreTransaction)
class SQLiteTransaction:
    """Valid only inside ``SQLiteStore.transact``: the store owns BEGIN/COMMIT/ROLLBACK."""

    def __init__(self, connection: sqlite3.Connection, now: Callable[[], datetime]) -> None:
        self._db = connection
        self._now = now

    def _stamp(self) -> str:
        return to_text(self._now())

    # settings

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (name, value, self._stamp()),
        )

    def delete_setting(self, name: str) -> None:
        self._db.execute("DELETE FROM settings WHERE name = ?", (name,))

    # certificates

    def add_certificate(self, fields: CertificateFields) -> CertificateRecord:
        stamp = self._stamp()
        columns = ", ".join((*_CERT_COLUMNS, "created_at", "updated_at"))
        marks = ", ".join("?" * (len(_CERT_COLUMNS) + 2))
        try:
            cursor = self._db.execute(
                f"INSERT INTO certificates ({columns}) VALUES ({marks})",  # noqa: S608 # nosec B608
                [*_cert_values(fields), stamp, stamp],
            )
        except sqlite3.IntegrityError:
            raise Conflict("a certificate with this uid exists", "uid") from None
        assert cursor.lastrowid is not None  # nosec B101 # narrows a type
        return self.get_certificate(cursor.lastrowid)

    def get_certificate(self, cert_id: int) -> CertificateRecord:
        row = self._db.execute("SELECT * FROM certificates WHERE id = ?", (cert_id,)).fetchone()
        if row is None:
            raise NotFound("certificate", cert_id)
        return _cert_from_row(row)

    def list_certificates(self) -> list[CertificateRecord]:
        rows = self._db.execute("SELECT * FROM certificates ORDER BY id").fetchall()
        return [_cert_from_row(row) for row in rows]

    def replace_certificate(self, cert_id: int, fields: CertificateFields) -> CertificateRecord:
        assignments = ", ".join(f"{column} = ?" for column in (*_CERT_COLUMNS, "updated_at"))
        try:
            cursor = self._db.execute(
                f"UPDATE certificates SET {assignments} WHERE id = ?",  # noqa: S608 # nosec B608
                [*_cert_values(fields), self._stamp(), cert_id],
            )
        except sqlite3.IntegrityError:
            raise Conflict("a certificate with this uid exists", "uid") from None
        if cursor.rowcount == 0:
            raise NotFound("certificate", cert_id)
        return self.get_certificate(cert_id)

    def delete_certificate(self, cert_id: int) -> None:
        users = self.hosts_using_certificate(cert_id)
        if users:
            names = ", ".join(host.domain for host in users)
            raise Conflict(f"certificate {cert_id} is used by: {names}", "id")
        cursor = self._db.execute("DELETE FROM certificates WHERE id = ?", (cert_id,))
        if cursor.rowcount == 0:
            raise NotFound("certificate", cert_id)

    def hosts_using_certificate(self, cert_id: int) -> list[HostRecord]:
        rows = self._db.execute(
            "SELECT * FROM hosts WHERE ssl_cert_id = ? ORDER BY id", (cert_id,)
        ).fetchall()
        return [_host_from_row(row) for row in rows]

    # hosts

    def _claim_names(self, host_id: int, fields: HostFields) -> None:
        if len(set(fields.names)) != len(fields.names):
            raise Conflict("a name appears twice in domain and aliases", "aliases")
        self._db.execute("DELETE FROM host_names WHERE host_id = ?", (host_id,))
        for index, name in enumerate(fields.names):
            row = self._db.execute(
                "SELECT host_id FROM host_names WHERE name = ?", (name,)
            ).fetchone()
            if row is not None:
                field = "domain" if index == 0 else "aliases"
                raise Conflict(f"{name} already belongs to host {row['host_id']}", field)
            self._db.execute(
                "INSERT INTO host_names (name, host_id) VALUES (?, ?)", (name, host_id)
            )

    def _check_certificate(self, fields: HostFields) -> None:
        if fields.ssl_cert_id is None:
            return
        row = self._db.execute(
            "SELECT 1 FROM certificates WHERE id = ?", (fields.ssl_cert_id,)
        ).fetchone()
        if row is None:
            raise Conflict(f"no certificate with id {fields.ssl_cert_id}", "ssl_cert_id")

    def add_host(self, fields: HostFields) -> HostRecord:
        self._check_certificate(fields)
        stamp = self._stamp()
        columns = ", ".join((*_HOST_COLUMNS, "created_at", "updated_at"))
        marks = ", ".join("?" * (len(_HOST_COLUMNS) + 2))
        try:
            cursor = self._db.execute(
                f"INSERT INTO hosts ({columns}) VALUES ({marks})",  # noqa: S608 # nosec B608
                [*_host_values(fields), stamp, stamp],
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{fields.domain} already belongs to another host", "domain") from None
        assert cursor.lastrowid is not None  # nosec B101 # narrows a type
        self._claim_names(cursor.lastrowid, fields)
        return self.get_host(cursor.lastrowid)

    def get_host(self, host_id: int) -> HostRecord:
        row = self._db.execute("SELECT * FROM hosts WHERE id = ?", (host_id,)).fetchone()
        if row is None:
            raise NotFound("host", host_id)
        return _host_from_row(row)

    def list_hosts(self) -> list[HostRecord]:
        rows = self._db.execute("SELECT * FROM hosts ORDER BY id").fetchall()
        return [_host_from_row(row) for row in rows]

    def replace_host(self, host_id: int, fields: HostFields) -> HostRecord:
        self.get_host(host_id)
        self._check_certificate(fields)
        assignments = ", ".join(f"{column} = ?" for column in (*_HOST_COLUMNS, "updated_at"))
        try:
            self._db.execute(
                f"UPDATE hosts SET {assignments} WHERE id = ?",  # noqa: S608 # nosec B608
                [*_host_values(fields), self._stamp(), host_id],
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"{fields.domain} already belongs to another host", "domain") from None
        self._claim_names(host_id, fields)
        return self.get_host(host_id)

    def delete_host(self, host_id: int) -> None:
        cursor = self._db.execute("DELETE FROM hosts WHERE id = ?", (host_id,))
        if cursor.rowcount == 0:
            raise NotFound("host", host_id)

    # automatic issuance (ACME)

    def get_issuance_state(self, name: str) -> IssuanceState | None:
        row = self._db.execute(
            "SELECT * FROM issuance_state WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else _issuance_from_row(row)

    def put_issuance_state(self, state: IssuanceState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO issuance_state (name, status, certificate_id, failures, "
            "last_attempt_at, last_error, next_attempt_at, renews_at, order_url, "
            "pending_key_sealed, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                state.name, state.status, state.certificate_id, state.failures,
                _text_or_none(state.last_attempt_at), state.last_error,
                _text_or_none(state.next_attempt_at), _text_or_none(state.renews_at),
                state.order_url, state.pending_key_sealed, self._stamp(),
            ),
        )

    def list_issuance_states(self) -> list[IssuanceState]:
        rows = self._db.execute("SELECT * FROM issuance_state ORDER BY name").fetchall()
        return [_issuance_from_row(row) for row in rows]

    def delete_issuance_state(self, name: str) -> None:
        self._db.execute("DELETE FROM issuance_state WHERE name = ?", (name,))

    def put_acme_challenge(self, challenge: AcmeChallenge) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO acme_challenges (token, key_authorization, name, "
            "created_at) VALUES (?, ?, ?, ?)",
            (challenge.token, challenge.key_authorization, challenge.name,
             to_text(challenge.created_at)),
        )

    def delete_acme_challenge(self, token: str) -> None:
        self._db.execute("DELETE FROM acme_challenges WHERE token = ?", (token,))

    def list_acme_challenges(self) -> list[AcmeChallenge]:
        rows = self._db.execute("SELECT * FROM acme_challenges ORDER BY token").fetchall()
        return [
            AcmeChallenge(
                token=row["token"], key_authorization=row["key_authorization"],
                name=row["name"], created_at=from_text(row["created_at"]),
            )
            for row in rows
        ]
