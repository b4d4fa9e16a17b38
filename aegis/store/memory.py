"""An in-memory store held to the same contract tests as SQLite.

Tests and tools that need state but no file use it. A transaction works on a copy of the
tables and publishes it only when the work returns, so a failure changes nothing, exactly
like a rollback.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

from aegis.interfaces import IStore, IStoreTransaction
from aegis.store.errors import Conflict, NotFound, StoreError
from aegis.store.migrations import LATEST_VERSION
from aegis.store.records import (
    AcmeChallenge,
    CertificateFields,
    CertificateRecord,
    HostFields,
    HostRecord,
    IssuanceState,
)
from aegis.timefmt import utcnow

T = TypeVar("T")


@dataclass
class _Tables:
    settings: dict[str, str] = field(default_factory=dict)
    certificates: dict[int, CertificateRecord] = field(default_factory=dict)
    hosts: dict[int, HostRecord] = field(default_factory=dict)
    next_certificate_id: int = 1
    next_host_id: int = 1
    issuance: dict[str, IssuanceState] = field(default_factory=dict)
    challenges: dict[str, AcmeChallenge] = field(default_factory=dict)


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _maybe_second(moment: datetime | None) -> datetime | None:
    return None if moment is None else _second(moment)


@implementer(IStoreTransaction)
class MemoryTransaction:
    def __init__(self, tables: _Tables, now: Callable[[], datetime]) -> None:
        self._t = tables
        self._now = now

    def get_setting(self, name: str) -> str | None:
        return self._t.settings.get(name)

    def set_setting(self, name: str, value: str) -> None:
        self._t.settings[name] = value

    def delete_setting(self, name: str) -> None:
        self._t.settings.pop(name, None)

    def _certificate(self, fields_: CertificateFields, ident: int, created: datetime) -> (
        CertificateRecord
    ):
        for other in self._t.certificates.values():
            if other.uid == fields_.uid and other.id != ident:
                raise Conflict("a certificate with this uid exists", "uid")
        values = {f.name: getattr(fields_, f.name) for f in fields(CertificateFields)}
        values["not_before"] = _second(fields_.not_before)
        values["not_after"] = _second(fields_.not_after)
        return CertificateRecord(
            **values, id=ident, created_at=created, updated_at=_second(self._now())
        )

    def add_certificate(self, fields: CertificateFields) -> CertificateRecord:
        ident = self._t.next_certificate_id
        record = self._certificate(fields, ident, _second(self._now()))
        self._t.certificates[ident] = record
        self._t.next_certificate_id += 1
        return record

    def get_certificate(self, cert_id: int) -> CertificateRecord:
        try:
            return self._t.certificates[cert_id]
        except KeyError:
            raise NotFound("certificate", cert_id) from None

    def list_certificates(self) -> list[CertificateRecord]:
        return [self._t.certificates[key] for key in sorted(self._t.certificates)]

    def replace_certificate(self, cert_id: int, fields: CertificateFields) -> CertificateRecord:
        old = self.get_certificate(cert_id)
        record = self._certificate(fields, cert_id, old.created_at)
        self._t.certificates[cert_id] = record
        return record

    def delete_certificate(self, cert_id: int) -> None:
        users = self.hosts_using_certificate(cert_id)
        if users:
            names = ", ".join(host.domain for host in users)
            raise Conflict(f"certificate {cert_id} is used by: {names}", "id")
        self.get_certificate(cert_id)
        del self._t.certificates[cert_id]

    def hosts_using_certificate(self, cert_id: int) -> list[HostRecord]:
        return [host for host in self.list_hosts() if host.ssl_cert_id == cert_id]

    def _host(self, fields_: HostFields, ident: int, created: datetime) -> HostRecord:
        if fields_.ssl_cert_id is not None and fields_.ssl_cert_id not in self._t.certificates:
            raise Conflict(f"no certificate with id {fields_.ssl_cert_id}", "ssl_cert_id")
        for other in self._t.hosts.values():
            if other.id == ident:
                continue
            for index, name in enumerate(fields_.names):
                if name in other.names:
                    field_name = "domain" if index == 0 else "aliases"
                    raise Conflict(f"{name} already belongs to host {other.id}", field_name)
        if len(set(fields_.names)) != len(fields_.names):
            raise Conflict("a name appears twice in domain and aliases", "aliases")
        values = {f.name: getattr(fields_, f.name) for f in fields(HostFields)}
        return HostRecord(**values, id=ident, created_at=created, updated_at=_second(self._now()))

    def add_host(self, fields: HostFields) -> HostRecord:
        ident = self._t.next_host_id
        record = self._host(fields, ident, _second(self._now()))
        self._t.hosts[ident] = record
        self._t.next_host_id += 1
        return record

    def get_host(self, host_id: int) -> HostRecord:
        try:
            return self._t.hosts[host_id]
        except KeyError:
            raise NotFound("host", host_id) from None

    def list_hosts(self) -> list[HostRecord]:
        return [self._t.hosts[key] for key in sorted(self._t.hosts)]

    def replace_host(self, host_id: int, fields: HostFields) -> HostRecord:
        old = self.get_host(host_id)
        record = self._host(fields, host_id, old.created_at)
        self._t.hosts[host_id] = replace(record, created_at=old.created_at)
        return self._t.hosts[host_id]

    def delete_host(self, host_id: int) -> None:
        self.get_host(host_id)
        del self._t.hosts[host_id]

    def get_issuance_state(self, name: str) -> IssuanceState | None:
        return self._t.issuance.get(name)

    def put_issuance_state(self, state: IssuanceState) -> None:
        self._t.issuance[state.name] = replace(
            state,
            last_attempt_at=_maybe_second(state.last_attempt_at),
            next_attempt_at=_maybe_second(state.next_attempt_at),
            renews_at=_maybe_second(state.renews_at),
            retired_at=_maybe_second(state.retired_at),
            recent_failures=tuple(_second(moment) for moment in state.recent_failures),
        )

    def list_issuance_states(self) -> list[IssuanceState]:
        return [self._t.issuance[name] for name in sorted(self._t.issuance)]

    def delete_issuance_state(self, name: str) -> None:
        self._t.issuance.pop(name, None)

    def put_acme_challenge(self, challenge: AcmeChallenge) -> None:
        self._t.challenges[challenge.token] = replace(
            challenge, created_at=_second(challenge.created_at)
        )

    def delete_acme_challenge(self, token: str) -> None:
        self._t.challenges.pop(token, None)

    def list_acme_challenges(self) -> list[AcmeChallenge]:
        return [self._t.challenges[token] for token in sorted(self._t.challenges)]


@implementer(IStore)
class MemoryStore:
    """:class:`aegis.interfaces.IStore` in memory; transactions run synchronously."""

    def __init__(self, now: Callable[[], datetime] = utcnow) -> None:
        self._tables: _Tables | None = _Tables()
        self._now = now

    def transact_blocking(self, work: Callable[[IStoreTransaction], T]) -> T:
        if self._tables is None:
            raise StoreError("the store is closed")
        draft = copy.copy(self._tables)
        draft.settings = dict(draft.settings)
        draft.certificates = dict(draft.certificates)
        draft.hosts = dict(draft.hosts)
        draft.issuance = dict(draft.issuance)
        draft.challenges = dict(draft.challenges)
        result = work(MemoryTransaction(draft, self._now))
        self._tables = draft
        return result

    def transact(self, work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        return maybeDeferred(self.transact_blocking, work)

    def schema_version(self) -> int:
        return LATEST_VERSION

    def close(self) -> None:
        self._tables = None
