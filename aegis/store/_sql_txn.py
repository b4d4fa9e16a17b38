"""The SQL behind :class:`aegis.interfaces.IStoreTransaction`, for SQLite and PostgreSQL.

One copy of the SQL serves both databases: statements are written with ``?`` placeholders
and in the subset both understand (``INSERT ... ON CONFLICT DO UPDATE``, ``RETURNING id``,
``SAVEPOINT``). What differs is a :class:`Dialect`: the placeholder and the class of
integrity errors. Values are stored in the same text forms everywhere (times through
:mod:`aegis.timefmt`, lists and maps as JSON, booleans as 0/1), so a record read back from
either database is the same record, and ``aegis migrate-store`` can copy rows verbatim.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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


class Cursor(Protocol):
    """The part of a DB-API cursor the transaction reads."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Connection(Protocol):
    """A connection whose ``execute`` returns a cursor (sqlite3 and psycopg both do).

    Rows must allow ``row["column"]``: ``sqlite3.Row`` and psycopg's ``dict_row`` do.
    """

    def execute(self, sql: Any, params: Any = ..., /) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL databases :class:`SQLTransaction` runs on."""

    name: str
    placeholder: str
    integrity_error: type[Exception]

    def prepare(self, sql: str) -> str:
        """``sql`` with this database's placeholders (statements never hold a literal ?)."""
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)


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

_ISSUANCE_COLUMNS = (
    "name", "status", "certificate_id", "failures", "last_attempt_at", "last_error",
    "next_attempt_at", "renews_at", "order_url", "pending_key_sealed", "updated_at", "source",
    "names", "issuer", "recent_failures", "retired_at",
)

def _uid_taken() -> Conflict:  # a fresh exception each time: raising sets its traceback
    return Conflict("a certificate with this uid exists", "uid")


def _taken(fields: HostFields) -> Conflict:
    return Conflict(f"{fields.domain} already belongs to another host", "domain")


def _cert_values(fields: CertificateFields) -> list[Any]:
    return [
        fields.uid, fields.source, json.dumps(list(fields.domains)), fields.chain_pem,
        fields.key_sealed, fields.issuer, fields.subject, to_text(fields.not_before),
        to_text(fields.not_after), fields.fingerprint_sha256, fields.key_type,
        int(fields.chain_complete), int(fields.auto_renew), fields.source_ref,
        json.dumps(dict(fields.extra), sort_keys=True),
    ]


def _cert_from_row(row: Any) -> CertificateRecord:
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


def _host_from_row(row: Any) -> HostRecord:
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


def _issuance_from_row(row: Any) -> IssuanceState:
    sealed = row["pending_key_sealed"]
    return IssuanceState(
        name=row["name"], status=row["status"], certificate_id=row["certificate_id"],
        failures=row["failures"], last_attempt_at=_moment_or_none(row["last_attempt_at"]),
        last_error=row["last_error"], next_attempt_at=_moment_or_none(row["next_attempt_at"]),
        renews_at=_moment_or_none(row["renews_at"]), order_url=row["order_url"],
        pending_key_sealed=None if sealed is None else bytes(sealed),
        source=row["source"], names=tuple(json.loads(row["names"])), issuer=row["issuer"],
        recent_failures=tuple(from_text(text) for text in json.loads(row["recent_failures"])),
        retired_at=_moment_or_none(row["retired_at"]),
    )


@implementer(IStoreTransaction)
class SQLTransaction:
    """Valid only inside a store's ``transact``: the store owns BEGIN/COMMIT/ROLLBACK.

    A statement that may break a uniqueness rule runs inside a savepoint, so the
    :class:`Conflict` it turns into leaves the transaction usable on every database
    (PostgreSQL aborts the whole transaction after a failed statement; SQLite does not).
    """

    def __init__(
        self, connection: Connection, dialect: Dialect, now: Callable[[], datetime]
    ) -> None:
        self._db = connection
        self._dialect = dialect
        self._now = now

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement written with ``?`` placeholders. For the store's own modules
        (``aegis migrate-store``, notifications); callers of the interface never see SQL."""
        return self._db.execute(self._dialect.prepare(sql), params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        return self.execute(sql, params).fetchall()

    def _returning(self, sql: str, params: Sequence[Any], conflict: Conflict) -> int | None:
        """Run an INSERT/UPDATE ... RETURNING id; the id, or None when no row matched.

        A broken uniqueness rule raises ``conflict`` with the transaction still usable.
        """
        self.execute("SAVEPOINT aegis_unique")
        try:
            row = self._one(sql, params)
        except self._dialect.integrity_error:
            self.execute("ROLLBACK TO SAVEPOINT aegis_unique")
            raise conflict from None
        self.execute("RELEASE SAVEPOINT aegis_unique")
        return None if row is None else int(row["id"])

    def _insert(
        self, table: str, columns: Sequence[str], values: Sequence[Any], conflict: Conflict
    ) -> int:
        """Insert a stamped row; its new id."""
        stamp = self._stamp()
        names = ", ".join((*columns, "created_at", "updated_at"))
        marks = ", ".join("?" * (len(columns) + 2))
        ident = self._returning(
            f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608 # nosec B608 # table and column names are constants
            [*values, stamp, stamp], conflict,
        )
        assert ident is not None  # nosec B101 # narrows a type
        return ident

    def _update(
        self, table: str, ident: int, columns: Sequence[str], values: Sequence[Any],
        conflict: Conflict,
    ) -> bool:
        """Overwrite row ``ident`` (``created_at`` stays); False if there is none."""
        assignments = ", ".join(f"{column} = ?" for column in (*columns, "updated_at"))
        return self._returning(
            f"UPDATE {table} SET {assignments} WHERE id = ? RETURNING id",  # noqa: S608 # nosec B608 # table and column names are constants
            [*values, self._stamp(), ident], conflict,
        ) is not None

    def _stamp(self) -> str:
        return to_text(self._now())

    # settings

    def get_setting(self, name: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE name = ?", (name,))
        return None if row is None else str(row["value"])

    def set_setting(self, name: str, value: str) -> None:
        self.execute(
            "INSERT INTO settings (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            (name, value, self._stamp()),
        )

    def delete_setting(self, name: str) -> None:
        self.execute("DELETE FROM settings WHERE name = ?", (name,))

    # certificates

    def add_certificate(self, fields: CertificateFields) -> CertificateRecord:
        return self.get_certificate(self._insert(
            "certificates", _CERT_COLUMNS, _cert_values(fields), _uid_taken()))

    def get_certificate(self, cert_id: int) -> CertificateRecord:
        row = self._one("SELECT * FROM certificates WHERE id = ?", (cert_id,))
        if row is None:
            raise NotFound("certificate", cert_id)
        return _cert_from_row(row)

    def list_certificates(self) -> list[CertificateRecord]:
        rows = self._all("SELECT * FROM certificates ORDER BY id")
        return [_cert_from_row(row) for row in rows]

    def replace_certificate(self, cert_id: int, fields: CertificateFields) -> CertificateRecord:
        if not self._update(
            "certificates", cert_id, _CERT_COLUMNS, _cert_values(fields), _uid_taken()
        ):
            raise NotFound("certificate", cert_id)
        return self.get_certificate(cert_id)

    def delete_certificate(self, cert_id: int) -> None:
        users = self.hosts_using_certificate(cert_id)
        if users:
            names = ", ".join(host.domain for host in users)
            raise Conflict(f"certificate {cert_id} is used by: {names}", "id")
        cursor = self.execute("DELETE FROM certificates WHERE id = ?", (cert_id,))
        if cursor.rowcount == 0:
            raise NotFound("certificate", cert_id)

    def hosts_using_certificate(self, cert_id: int) -> list[HostRecord]:
        rows = self._all("SELECT * FROM hosts WHERE ssl_cert_id = ? ORDER BY id", (cert_id,))
        return [_host_from_row(row) for row in rows]

    # hosts

    def _claim_names(self, host_id: int, fields: HostFields) -> None:
        if len(set(fields.names)) != len(fields.names):
            raise Conflict("a name appears twice in domain and aliases", "aliases")
        self.execute("DELETE FROM host_names WHERE host_id = ?", (host_id,))
        for index, name in enumerate(fields.names):
            row = self._one("SELECT host_id FROM host_names WHERE name = ?", (name,))
            if row is not None:
                field = "domain" if index == 0 else "aliases"
                raise Conflict(f"{name} already belongs to host {row['host_id']}", field)
            self.execute("INSERT INTO host_names (name, host_id) VALUES (?, ?)", (name, host_id))

    def _check_certificate(self, fields: HostFields) -> None:
        if fields.ssl_cert_id is None:
            return
        if self._one("SELECT 1 FROM certificates WHERE id = ?", (fields.ssl_cert_id,)) is None:
            raise Conflict(f"no certificate with id {fields.ssl_cert_id}", "ssl_cert_id")

    def add_host(self, fields: HostFields) -> HostRecord:
        self._check_certificate(fields)
        host_id = self._insert("hosts", _HOST_COLUMNS, _host_values(fields), _taken(fields))
        self._claim_names(host_id, fields)
        return self.get_host(host_id)

    def get_host(self, host_id: int) -> HostRecord:
        row = self._one("SELECT * FROM hosts WHERE id = ?", (host_id,))
        if row is None:
            raise NotFound("host", host_id)
        return _host_from_row(row)

    def list_hosts(self) -> list[HostRecord]:
        return [_host_from_row(row) for row in self._all("SELECT * FROM hosts ORDER BY id")]

    def replace_host(self, host_id: int, fields: HostFields) -> HostRecord:
        self.get_host(host_id)
        self._check_certificate(fields)
        self._update("hosts", host_id, _HOST_COLUMNS, _host_values(fields), _taken(fields))
        self._claim_names(host_id, fields)
        return self.get_host(host_id)

    def delete_host(self, host_id: int) -> None:
        cursor = self.execute("DELETE FROM hosts WHERE id = ?", (host_id,))
        if cursor.rowcount == 0:
            raise NotFound("host", host_id)

    # automatic issuance (ACME)

    def get_issuance_state(self, name: str) -> IssuanceState | None:
        row = self._one("SELECT * FROM issuance_state WHERE name = ?", (name,))
        return None if row is None else _issuance_from_row(row)

    def put_issuance_state(self, state: IssuanceState) -> None:
        columns = _ISSUANCE_COLUMNS
        updates = ", ".join(f"{column} = excluded.{column}" for column in columns[1:])
        self.execute(
            f"INSERT INTO issuance_state ({', '.join(columns)}) "  # noqa: S608 # nosec B608 # column names are constants
            f"VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}",
            (
                state.name, state.status, state.certificate_id, state.failures,
                _text_or_none(state.last_attempt_at), state.last_error,
                _text_or_none(state.next_attempt_at), _text_or_none(state.renews_at),
                state.order_url, state.pending_key_sealed, self._stamp(), state.source,
                json.dumps(list(state.names)), state.issuer,
                json.dumps([to_text(moment) for moment in state.recent_failures]),
                _text_or_none(state.retired_at),
            ),
        )

    def list_issuance_states(self) -> list[IssuanceState]:
        rows = self._all("SELECT * FROM issuance_state ORDER BY name")
        return [_issuance_from_row(row) for row in rows]

    def delete_issuance_state(self, name: str) -> None:
        self.execute("DELETE FROM issuance_state WHERE name = ?", (name,))

    def put_acme_challenge(self, challenge: AcmeChallenge) -> None:
        self.execute(
            "INSERT INTO acme_challenges (token, key_authorization, name, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (token) DO UPDATE SET "
            "key_authorization = excluded.key_authorization, name = excluded.name, "
            "created_at = excluded.created_at",
            (challenge.token, challenge.key_authorization, challenge.name,
             to_text(challenge.created_at)),
        )

    def delete_acme_challenge(self, token: str) -> None:
        self.execute("DELETE FROM acme_challenges WHERE token = ?", (token,))

    def list_acme_challenges(self) -> list[AcmeChallenge]:
        return [
            AcmeChallenge(
                token=row["token"], key_authorization=row["key_authorization"],
                name=row["name"], created_at=from_text(row["created_at"]),
            )
            for row in self._all("SELECT * FROM acme_challenges ORDER BY token")
        ]
