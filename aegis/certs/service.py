"""Certificate management over the store and the registry: upload, list, show, replace,
delete. The admin routes are a thin layer over this; other callers (the hosts API's inline
PEM, the CLI) use it too, so every path validates and seals keys the same way.

Order of work in a change: validate (CPU: signatures, an encrypted key's KDF) on a worker,
seal the key, one store transaction that re-checks what it depends on (source, names, hosts
using the certificate) so concurrent requests cannot slip between check and write, then a
registry reload so the TLS layer serves the new state. The reload's failure does not undo a
committed change: it is logged by the registry and the next reload catches up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from aegis.certs import sources
from aegis.certs.errors import NAMES_CHANGED, NOT_REPLACEABLE, CertificateError
from aegis.certs.registry import CertificateRegistry
from aegis.certs.validate import ValidatedCertificate, validate_upload
from aegis.certs.view import certificate_object
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore, IStoreTransaction
from aegis.store._runner import Runner, immediate_runner
from aegis.store.records import CertificateRecord, HostRecord


class CertificateInUse(Exception):
    """Deleting a certificate that hosts still use (409). ``hosts`` are (id, domain) pairs."""

    def __init__(self, cert_id: int, hosts: Sequence[HostRecord]) -> None:
        self.cert_id = cert_id
        self.hosts = tuple((host.id, host.domain) for host in hosts)
        named = ", ".join(f"{domain} (host {ident})" for ident, domain in self.hosts)
        super().__init__(
            f"certificate {cert_id} is used by {named}; assign those hosts another "
            "certificate first"
        )


def _hosts_by_certificate(hosts: Sequence[HostRecord]) -> dict[int, list[HostRecord]]:
    grouped: dict[int, list[HostRecord]] = {}
    for host in hosts:
        if host.ssl_cert_id is not None:
            grouped.setdefault(host.ssl_cert_id, []).append(host)
    return grouped


class CertificateService:
    """The certificate operations of the admin API.

    ``publish`` makes a committed change visible to the proxy: by default the registry's
    ``reload``; in the full tree ``aegis.hosts.state.ProxyState.reload`` (registry, SNI
    selection table and host router in one step). ``trust_roots`` decide
    ``chain_complete`` (normally the system bundle, see :mod:`aegis.certs.trust`).

    Methods are coroutines (await them, or wrap with ``Deferred.fromCoroutine``). Failures:
    :class:`CertificateError` (400/409), :class:`CertificateInUse` (409) or
    ``aegis.store.errors`` (404, 409, 503). Results are certificate objects (dicts) that
    never contain key material.
    """

    def __init__(
        self,
        store: IStore,
        wrapper: KeyWrapper,
        registry: CertificateRegistry,
        clock: IReactorTime,
        runner: Runner = immediate_runner,
        trust_roots: Sequence[x509.Certificate] = (),
        publish: Callable[[], Deferred[Any]] | None = None,
    ) -> None:
        self._publish = publish or registry.reload
        self._store = store
        self._wrapper = wrapper
        self._registry = registry
        self._clock = clock
        self._runner = runner
        self._trust_roots = tuple(trust_roots)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def _view(
        self, record: CertificateRecord, hosts: Sequence[HostRecord], chain: bool = False
    ) -> dict[str, Any]:
        problem = self._registry.problem(record.id)
        return certificate_object(record, hosts, self._now(), problem, include_chain=chain)

    def _validate(
        self, cert_pem: object, key_pem: object, domains: object, passphrase: object
    ) -> Deferred[ValidatedCertificate]:
        now = self._now()
        return self._runner(
            lambda: validate_upload(
                cert_pem,
                key_pem,
                now=now,
                domains=domains,
                key_passphrase=passphrase,
                trust_roots=self._trust_roots,
            )
        )

    async def _reload(self) -> None:
        # A failure is logged where it happens (certificate_reload_failed); the change stands.
        with contextlib.suppress(Exception):
            await self._publish()

    async def upload(
        self,
        cert_pem: object,
        key_pem: object,
        domains: object = None,
        key_passphrase: object = None,
    ) -> dict[str, Any]:
        """Validate and store a custom certificate; the new certificate object."""
        validated = await self._validate(cert_pem, key_pem, domains, key_passphrase)
        fields = validated.to_fields(self._wrapper, source=sources.upload_source().name)
        record = await self._store.transact(lambda txn: txn.add_certificate(fields))
        await self._reload()
        return self._view(record, ())

    async def list(self) -> list[dict[str, Any]]:
        def read(txn: IStoreTransaction) -> tuple[list[CertificateRecord], list[HostRecord]]:
            return txn.list_certificates(), txn.list_hosts()

        records, hosts = await self._store.transact(read)
        grouped = _hosts_by_certificate(hosts)
        return [self._view(record, grouped.get(record.id, ())) for record in records]

    async def get(self, cert_id: int) -> dict[str, Any]:
        """One certificate object plus its public ``chain_pem``."""

        def read(txn: IStoreTransaction) -> tuple[CertificateRecord, list[HostRecord]]:
            return txn.get_certificate(cert_id), txn.hosts_using_certificate(cert_id)

        record, hosts = await self._store.transact(read)
        return self._view(record, hosts, chain=True)

    async def replace(
        self,
        cert_id: int,
        cert_pem: object,
        key_pem: object,
        domains: object = None,
        key_passphrase: object = None,
    ) -> dict[str, Any]:
        """Replace a custom certificate in place with a pair for exactly the same names.

        Hosts bound to it follow without being edited; its id and ``created_at`` stay.
        """
        validated = await self._validate(cert_pem, key_pem, domains, key_passphrase)

        def swap(txn: IStoreTransaction) -> tuple[CertificateRecord, list[HostRecord]]:
            old = txn.get_certificate(cert_id)
            _check_replaceable(old, validated)
            fields = validated.to_fields(
                self._wrapper,
                source=old.source,
                auto_renew=old.auto_renew,
                source_ref=old.source_ref,
                extra=old.extra,
            )
            return txn.replace_certificate(cert_id, fields), txn.hosts_using_certificate(cert_id)

        record, hosts = await self._store.transact(swap)
        await self._reload()
        return self._view(record, hosts)

    async def delete(self, cert_id: int) -> None:
        """Delete an unused certificate; :class:`CertificateInUse` while hosts use it."""

        def remove(txn: IStoreTransaction) -> None:
            txn.get_certificate(cert_id)  # NotFound first: 404 beats 409
            hosts = txn.hosts_using_certificate(cert_id)
            if hosts:
                raise CertificateInUse(cert_id, hosts)
            txn.delete_certificate(cert_id)

        await self._store.transact(remove)
        await self._reload()


def _check_replaceable(old: CertificateRecord, new: ValidatedCertificate) -> None:
    spec = sources.get(old.source)
    if not spec.replaceable:
        takes = ", ".join(s.name for s in sources.all_sources() if s.replaceable)
        how = spec.renewal_note or "renewed by its source"
        if old.auto_renew and spec.issuer is not None:
            how = "renewed by Aegis automatically"
        raise CertificateError(
            NOT_REPLACEABLE,
            f"certificate {old.id} comes from {spec.label} ({old.source}) and is {how}; "
            f"only {takes} certificates are replaced by upload",
            None,
            status=409,
        )
    if set(old.domains) != set(new.names):
        missing = sorted(set(old.domains) - set(new.names))
        extra = sorted(set(new.names) - set(old.domains))
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("adds " + ", ".join(extra))
        raise CertificateError(
            NAMES_CHANGED,
            "a replacement must cover exactly the same names ("
            + "; ".join(parts)
            + "); upload it as a new certificate instead",
            "cert_pem",
        )
