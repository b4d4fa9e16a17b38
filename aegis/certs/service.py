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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aegis.certs import sources
from aegis.certs.errors import NAMES_CHANGED, NOT_REPLACEABLE, CertificateError
from aegis.certs.registry import CertificateRegistry
from aegis.certs.usage import HostUse, SelectionView, bindings_only, served_hosts
from aegis.certs.validate import ValidatedCertificate, validate_upload
from aegis.certs.view import certificate_object
from aegis.crypto.keywrap import KeyWrapper
from aegis.events import CERT_DELETED
from aegis.interfaces import IStore, IStoreTransaction
from aegis.store._runner import Runner, immediate_runner
from aegis.store.records import CertificateRecord, HostRecord, IssuanceState
from aegis.tls.selection import STEP_HOST_BINDING

if TYPE_CHECKING:
    from aegis.certs.lifecycle import LifecycleEngine
    from aegis.events import EventPublisher

log = Logger()


class CertificateInUse(Exception):
    """Deleting a certificate that serves hosts (409 ``certificate_in_use``).

    ``hosts`` are ``{id, domain, step}`` of every host it serves; ``forced``: the caller
    asked for ``force`` and only bindings (``ssl_cert_id``) stand in the way.
    """

    def __init__(self, cert_id: int, uses: Sequence[HostUse], forced: bool = False) -> None:
        self.cert_id = cert_id
        self.forced = forced
        self.hosts = [use.brief() for use in uses]
        named = ", ".join(use.describe() for use in uses)
        if bindings_only(uses):
            how = ("assign those hosts another certificate (ssl_cert_id) first; force does "
                   "not remove a binding")
        else:
            how = ("deleting it leaves those names on another certificate or the fallback "
                   "until a new one is obtained; repeat with ?force=true to delete it anyway")
        super().__init__(f"certificate {cert_id} serves {named}; {how}")


class CertificateService:
    """The certificate operations of the admin API.

    ``publish`` makes a committed change visible to the proxy: by default the registry's
    ``reload``; in the full tree ``aegis.hosts.state.ProxyState.reload`` (registry, SNI
    selection table and host router in one step). ``trust_roots`` decide
    ``chain_complete`` (normally the system bundle, see :mod:`aegis.certs.trust`).
    ``selection`` (the SNI selection state) tells which hosts each certificate serves and
    how (without it only ``ssl_cert_id`` bindings are known); ``lifecycle`` (the engine)
    gives each certificate's ``lifecycle`` and is told when a managed certificate is
    deleted; ``events`` gets ``cert_deleted``.

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
        selection: SelectionView | None = None,
        lifecycle: LifecycleEngine | None = None,
        events: EventPublisher | None = None,
    ) -> None:
        self._publish = publish or registry.reload
        self._store = store
        self._wrapper = wrapper
        self._registry = registry
        self._clock = clock
        self._runner = runner
        self._trust_roots = tuple(trust_roots)
        self._selection = selection
        self._lifecycle = lifecycle
        self._events = events or (None if lifecycle is None else lifecycle.events)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), UTC)

    def _usage(self, hosts: Sequence[HostRecord]) -> dict[int, list[HostUse]]:
        return served_hosts(hosts, self._selection, self._now())

    def _managed(self) -> dict[int, IssuanceState]:
        """Certificate id -> the engine state that points at it (a live one before a
        retired one)."""
        found: dict[int, IssuanceState] = {}
        for state in [] if self._lifecycle is None else self._lifecycle.states():
            if state.certificate_id is None:
                continue
            held = found.get(state.certificate_id)
            if held is None or held.status == "retired":
                found[state.certificate_id] = state
        return found

    def _view(
        self,
        record: CertificateRecord,
        usage: Mapping[int, Sequence[HostUse]],
        managed: Mapping[int, IssuanceState],
        chain: bool = False,
    ) -> dict[str, Any]:
        problem = self._registry.problem(record.id)
        return certificate_object(record, usage.get(record.id, ()), self._now(), problem,
                                  include_chain=chain, lifecycle=managed.get(record.id))

    async def _one(self, record: CertificateRecord, chain: bool = False) -> dict[str, Any]:
        """The object of one certificate just read or written, with its hosts as now."""
        hosts = await self._store.transact(lambda txn: txn.list_hosts())
        return self._view(record, self._usage(hosts), self._managed(), chain)

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
        return await self._one(record)

    async def list(self) -> list[dict[str, Any]]:
        def read(txn: IStoreTransaction) -> tuple[list[CertificateRecord], list[HostRecord]]:
            return txn.list_certificates(), txn.list_hosts()

        records, hosts = await self._store.transact(read)
        usage, managed = self._usage(hosts), self._managed()
        return [self._view(record, usage, managed) for record in records]

    async def get(self, cert_id: int) -> dict[str, Any]:
        """One certificate object plus its public ``chain_pem``."""
        record = await self._store.transact(lambda txn: txn.get_certificate(cert_id))
        return await self._one(record, chain=True)

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

        def swap(txn: IStoreTransaction) -> CertificateRecord:
            old = txn.get_certificate(cert_id)
            _check_replaceable(old, validated)
            fields = validated.to_fields(
                self._wrapper,
                source=old.source,
                auto_renew=old.auto_renew,
                source_ref=old.source_ref,
                extra=old.extra,
            )
            return txn.replace_certificate(cert_id, fields)

        record = await self._store.transact(swap)
        await self._reload()
        return await self._one(record)

    async def delete(self, cert_id: int, force: bool = False) -> None:
        """Delete a certificate that serves no host; :class:`CertificateInUse` while it
        serves one by any step of the SNI order.

        ``force`` deletes one that serves hosts by domain match or as their automatic
        certificate; the lifecycle of its names is reset so a new certificate is ordered
        at once. A certificate bound by ``ssl_cert_id`` is refused even then (the binding
        must change first). The served hosts are read from the selection table on the
        reactor thread; the bindings are checked again inside the deleting transaction.
        """
        def read(txn: IStoreTransaction) -> list[HostRecord]:
            txn.get_certificate(cert_id)  # NotFound first: 404 beats 409
            return txn.list_hosts()

        uses = self._usage(await self._store.transact(read)).get(cert_id, [])
        if uses and not force:
            raise CertificateInUse(cert_id, uses)

        def remove(txn: IStoreTransaction) -> CertificateRecord:
            found = txn.get_certificate(cert_id)
            bound = [HostUse(host, STEP_HOST_BINDING, host.names)
                     for host in txn.hosts_using_certificate(cert_id)]
            if bound:
                raise CertificateInUse(cert_id, bound, forced=force)
            txn.delete_certificate(cert_id)
            return found

        record = await self._store.transact(remove)
        await self._reload()
        managed = self._managed().get(cert_id)
        names = sorted({*record.domains, *(name for use in uses for name in use.names)})
        if self._events is not None:
            self._events.publish(CERT_DELETED, certificate_id=cert_id, source=record.source,
                                 names=names, forced=force and bool(uses),
                                 served_hosts=[use.brief() for use in uses])
        if self._lifecycle is not None and (uses or managed is not None):
            try:
                await self._lifecycle.reset_names(names, reason="deleted")
            except Exception:
                log.failure("resetting the lifecycle of {names} failed", names=names)


def _check_replaceable(old: CertificateRecord, new: ValidatedCertificate) -> None:
    spec = sources.get(old.source)
    if not spec.replaceable:
        takes = ", ".join(s.name for s in sources.all_sources() if s.replaceable)
        if old.auto_renew and spec.issuer is not None:
            how = "renewed by Aegis automatically"
        elif spec.renews_itself:  # retired: no host wants it, so nothing renews it
            how = "no longer renewed (no host asks for it any more); delete it instead"
        else:
            how = spec.renewal_note or "not renewed by Aegis"
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
