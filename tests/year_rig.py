"""The simulated year's rig: the real lifecycle engine, registry, selection table, monitor
and alert channels on one ``Clock``, over a memory store that can be made to refuse writes.

Real pieces: :class:`LifecycleEngine`, :class:`CertificateRegistry`, :class:`SelectionState`,
:class:`ExpiryMonitor`, :class:`Dispatcher` with the webhook and mail channels (talking to
real receivers on loopback through the real reactor), :class:`LocalCAMaintenance`, the admin
API resource (health and ``/metrics`` through ``StubTreq``). Fakes: the CA
(:class:`aegis.testing.issuer.FakeIssuer`) and, for Cloudflare Origin with automatic renewal,
a throwaway source with the same shape (a domain-match source renewing stored certificates
in place) whose fake answers 5xx during its outage.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from aegis.admin import AdminAddress, AdminAPI, AdminContext, TokenVerifier
from aegis.admin._guards import token_digest
from aegis.certs import sources
from aegis.certs.lifecycle import LifecycleEngine
from aegis.certs.lifecycle.demand import Demand, DemandInputs
from aegis.certs.lifecycle.transitions import issued_fields
from aegis.certs.registry import CertificateRegistry
from aegis.config import Settings
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.events import EventPublisher
from aegis.interfaces import ICertificateIssuer
from aegis.localca import LocalCA, LocalCAMaintenance, admin_certificate_names
from aegis.monitor.delivery import AlertChannel
from aegis.monitor.wiring import LocalWatch, Monitoring, build_monitoring
from aegis.store.errors import StoreFull
from aegis.store.memory import MemoryStore
from aegis.store.records import CertificateFields, HostFields, IssuanceState
from aegis.testing.issuer import FakeCA, FakeIssuer, IssuerFailure
from aegis.tls.selection import SelectionState

START = datetime(2026, 1, 5, tzinfo=UTC)
DAY = 86400.0
TOKEN = "year-token-0123456789abcdef"
ORIGIN_SOURCE = "sim_origin_renewing"
ACME_IDENTITY = "acme https://fake-ca.test/directory account-1"


def at(day: float) -> float:
    return START.timestamp() + day * DAY


# -- a store whose writes can fail (disk full) ---------------------------------------------

_WRITES = ("set_", "put_", "add_", "replace_", "delete_")


class _ReadOnly:
    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def __getattr__(self, name: str) -> Any:
        if name.startswith(_WRITES):
            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise StoreFull("database or disk is full")
            return refuse
        return getattr(self._txn, name)


class FillableStore:
    """A :class:`MemoryStore` that refuses every write while ``full`` (reads still work,
    as SQLite on a full disk)."""

    def __init__(self, clock: Clock) -> None:
        self._inner = MemoryStore(now=lambda: datetime.fromtimestamp(int(clock.seconds()), UTC))
        self.full = False

    def transact(self, work: Callable[[Any], Any]) -> Deferred[Any]:
        if self.full:
            return self._inner.transact(lambda txn: work(_ReadOnly(txn)))
        return self._inner.transact(work)

    def transact_blocking(self, work: Callable[[Any], Any]) -> Any:
        if self.full:
            return self._inner.transact_blocking(lambda txn: work(_ReadOnly(txn)))
        return self._inner.transact_blocking(work)

    def schema_version(self) -> int:
        return self._inner.schema_version()

    def close(self) -> None:
        self._inner.close()


# -- issuers --------------------------------------------------------------------------------


@implementer(ICertificateIssuer)
class AcmeLikeIssuer:
    """The ACME source's issuer for the year: 6-day certificates for ``short-*`` names,
    45-day ones otherwise, from one fake CA."""

    key_kind = "ecdsa-p256"

    def __init__(self, clock: Clock, source: str, ca: FakeCA) -> None:
        self.source, self.identity = source, ACME_IDENTITY
        common = {"source": source, "identity": ACME_IDENTITY, "ca": ca}
        self.short = FakeIssuer(clock, lifetime=timedelta(days=6), **common)
        self.long = FakeIssuer(clock, lifetime=timedelta(days=45), **common)

    def _for(self, names: Sequence[str]) -> FakeIssuer:
        return self.short if names[0].startswith("short-") else self.long

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        return self._for(names).issue(csr_pem, names)

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        return self._for(names).abandon(names)

    def renewal_window(self, not_before: datetime, not_after: datetime) -> Any:
        return None

    def down_until(self, when: float | None) -> None:
        self.short.down_until(when)
        self.long.down_until(when)

    def fail_for(self, name: str, message: str) -> None:
        self._for([name]).fail_for(name, message)

    @property
    def issued(self) -> int:
        return self.short.issued + self.long.issued


class OriginLikeIssuer(FakeIssuer):
    """Cloudflare Origin CA renewals: 15-year certificates; ``http_5xx_until`` makes every
    call fail the way the Cloudflare client reports a 5xx (with the time to retry)."""

    def __init__(self, clock: Clock, ca: FakeCA) -> None:
        super().__init__(clock, source=ORIGIN_SOURCE, identity="cloudflare-origin-ca sim",
                         lifetime=timedelta(days=5475), ca=ca)
        self._clock_ = clock
        self.http_5xx_until: float | None = None

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[Any]:
        if self.http_5xx_until is not None and self._clock_.seconds() < self.http_5xx_until:
            self.issue_calls += 1
            from twisted.internet.defer import fail

            return fail(CloudflareHTTP5xx("Cloudflare answered HTTP 503 (code 1000)"))
        return super().issue(csr_pem, names)


class CloudflareHTTP5xx(IssuerFailure):
    """How the rig's Cloudflare fails (the name shows as the failure ``reason``)."""


def origin_demand(inputs: DemandInputs) -> Iterable[Demand]:
    """Stored certificates of the origin source marked for renewal, renewed in place."""
    for record in inputs.certificates:
        if record.source == ORIGIN_SOURCE and record.auto_renew:
            yield Demand(key=f"certificate:{record.uid}", names=record.domains,
                         source=ORIGIN_SOURCE, certificate_id=record.id)


def register_origin_source(issuer: OriginLikeIssuer) -> None:
    sources.register(sources.SourceSpec(
        name=ORIGIN_SOURCE, label="Cloudflare Origin CA (automatic renewal, simulated)",
        selection_step=sources.DOMAIN_MATCH, issuer=lambda _ctx: issuer,
        demand=origin_demand, renewal_note="renewed by the simulated origin issuer"))


# -- the certificate population ----------------------------------------------------------------


@dataclass
class Planned:
    """One certificate of the population and who renews it."""

    name: str
    kind: str  # acme-6d, acme-45d, custom-90d, custom-1y, cloudflare-15y, origin-15y
    attended: bool = True  # manual ones: an operator replaces it on its critical alert
    cert_id: int | None = None


@dataclass
class Population:
    planned: list[Planned] = field(default_factory=list)

    def of(self, kind: str) -> list[Planned]:
        return [p for p in self.planned if p.kind == kind]

    def by_name(self) -> dict[str, Planned]:
        return {p.name: p for p in self.planned}


def population() -> Population:
    pop = Population()
    pop.planned += [Planned(f"short-{i:02}.example.com", "acme-6d") for i in range(12)]
    pop.planned += [Planned(f"long-{i:02}.example.com", "acme-45d") for i in range(47)]
    pop.planned.append(Planned("refused.example.com", "acme-45d"))
    pop.planned += [Planned(f"shop-{i:02}.example.net", "custom-90d", attended=i % 3 != 0)
                    for i in range(15)]
    pop.planned += [Planned(f"corp-{i:02}.example.org", "custom-1y", attended=i % 4 != 0)
                    for i in range(12)]
    pop.planned += [Planned(f"edge-{i:02}.example.io", "cloudflare-15y", attended=i != 0)
                    for i in range(8)]
    pop.planned += [Planned(f"origin-{i:02}.example.io", "origin-15y") for i in range(5)]
    assert len(pop.planned) == 100
    return pop


LIFETIMES = {"custom-90d": timedelta(days=90), "custom-1y": timedelta(days=365),
             "cloudflare-15y": timedelta(days=5475), "origin-15y": timedelta(days=5475)}


def manual_fields(ca: FakeCA, wrapper: KeyWrapper, name: str, source: str,
                  not_before: datetime, lifetime: timedelta, auto_renew: bool,
                  uid: str | None = None) -> CertificateFields:
    key = ec.generate_private_key(ec.SECP256R1())
    chain = ca.sign(key.public_key(), [name], not_before, not_before + lifetime)
    fields = issued_fields(chain, key, wrapper, source, f"{source} upload", uid=uid)
    return replace(fields, auto_renew=auto_renew)


# -- the whole rig ---------------------------------------------------------------------------


class Rig:
    """Everything wired as :mod:`aegis.assembly` wires it, on ``clock``."""

    def __init__(self, tmp: Path, channels: Sequence[AlertChannel]) -> None:
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.rand = random.Random(15)
        self.store = FillableStore(self.clock)
        self.wrapper = KeyWrapper(MasterKey.generate())
        self.publisher = EventPublisher(self.clock)
        sources.load_sources()  # all of them, whatever another test imported first
        acme = sources.for_mode("letsencrypt")
        assert acme is not None
        self.acme_source, self.acme_mode = acme.name, acme.host_mode
        self.upload_source = sources.upload_source().name
        self.cloudflare_source = next(
            s.name for s in sources.all_sources()
            if s.selection_step == sources.DOMAIN_MATCH and not s.uploads
            and s.name != ORIGIN_SOURCE)
        self.cas = {kind: FakeCA(self.now() - timedelta(days=6000), label=kind)
                    for kind in ("acme", "customer", "cloudflare")}
        self.acme = AcmeLikeIssuer(self.clock, self.acme_source, self.cas["acme"])
        self.origin = OriginLikeIssuer(self.clock, self.cas["cloudflare"])
        register_origin_source(self.origin)
        self.population = population()
        self._store_population()
        self.registry = CertificateRegistry(self.store, self.wrapper, self.clock)
        self.registry.load_blocking()
        self.local_ca = LocalCA(tmp / "local-ca")
        names = [p.name for p in self.population.planned]
        authority = self.local_ca.ensure(admin_certificate_names(None), names, self.now())
        self.engine = LifecycleEngine(
            self.clock, self.store, self.wrapper,
            {self.acme_source: self.acme, ORIGIN_SOURCE: self.origin},
            reload=self.reload, publisher=self.publisher, jitter=self.rand.random,
            check_interval=6 * 3600)  # it also wakes at every due time: fewer idle ticks
        hosts = self.store.transact_blocking(lambda txn: txn.list_hosts())
        self.selection = SelectionState(self.registry, authority.proxy, self.engine, hosts)
        self.local_watch = LocalWatch(authority, self.selection)
        self.monitoring = self._monitoring(channels)
        self.maintenance = LocalCAMaintenance(
            self.local_ca, admin_certificate_names(None), lambda: succeed(names),
            lambda work: succeed(work()), self.clock, publish=[self._local_renewed])
        self.api = AdminAPI(
            AdminContext(store=self.store, wrapper=self.wrapper, local_ca=authority,
                         clock=self.clock, monitoring=self.monitoring,
                         lifecycle=self.engine, events=self.publisher),
            TokenVerifier(token_digest(TOKEN)), AdminAddress(None, lambda: 9443))

    def _monitoring(self, channels: Sequence[AlertChannel]) -> Monitoring:
        return build_monitoring(
            Settings(), self.clock, self.store, self.publisher, lifecycle=self.engine,
            selection=self.selection, local=self.local_watch,
            listeners={"https": lambda: True}, alert_channels=channels,
            process_metrics=False)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def _local_renewed(self, authority: Any) -> None:
        self.local_watch.update(authority)
        self.selection.set_fallback(authority.proxy)

    def reload(self) -> Deferred[None]:
        def swapped(_snapshot: object) -> None:
            self.selection.certificates_changed()

        return self.registry.reload().addCallback(swapped)

    def _store_population(self) -> None:
        now = self.now()
        cas = self.cas
        ten_years = timedelta(days=3650)
        made: list[tuple[Planned, CertificateFields, str]] = []
        for planned in self.population.planned:
            kind = planned.kind
            if kind.startswith("acme"):
                continue
            lifetime = LIFETIMES[kind]
            if kind == "origin-15y":  # renewal (two thirds in) falls into the 5xx outage
                age = ten_years - timedelta(days=28.5 + sum(p.kind == kind for p, _f, _s in made))
                source, ca, renew = ORIGIN_SOURCE, cas["cloudflare"], True
            elif kind == "cloudflare-15y":
                age = lifetime - timedelta(days=self.rand.uniform(40, 900))
                source, ca, renew = self.cloudflare_source, cas["cloudflare"], False
            else:
                age = lifetime * self.rand.uniform(0.05, 0.9)
                source, ca, renew = self.upload_source, cas["customer"], False
            made.append((planned, manual_fields(ca, self.wrapper, planned.name, source,
                                                now - age, lifetime, renew), source))

        def work(txn: Any) -> None:
            for planned, fields, source in made:
                record = txn.add_certificate(fields)
                planned.cert_id = record.id
                txn.add_host(HostFields(domain=planned.name, upstream="http://127.0.0.1:9",
                                        ssl_mode=sources.MODE_BOUND, ssl_cert_id=record.id))
                if source == ORIGIN_SOURCE:  # managed for years already: a valid state
                    txn.put_issuance_state(IssuanceState(
                        name=f"certificate:{record.uid}", status="valid",
                        certificate_id=record.id, names=record.domains, source=source,
                        issuer=self.origin.identity,
                        renews_at=record.not_before + (record.not_after - record.not_before)
                        * 2 / 3))
            for planned in self.population.planned:
                if planned.kind.startswith("acme"):
                    txn.add_host(HostFields(domain=planned.name, upstream="http://127.0.0.1:9",
                                            ssl_mode=self.acme_mode))

        self.store.transact_blocking(work)

    def replace_manual(self, planned: Planned) -> None:
        """The operator's answer to a critical alert: a new certificate, replaced in place
        (hosts bound to it follow), published with a reload."""
        kind = planned.kind
        ca = self.cas["cloudflare" if kind == "cloudflare-15y" else "customer"]
        source = self.cloudflare_source if kind == "cloudflare-15y" else self.upload_source
        assert planned.cert_id is not None
        cert_id = planned.cert_id
        uid = self.store.transact_blocking(lambda txn: txn.get_certificate(cert_id).uid)
        fields = manual_fields(ca, self.wrapper, planned.name, source, self.now(),
                               LIFETIMES[kind], False, uid=uid)

        def work(txn: Any) -> None:
            txn.replace_certificate(cert_id, fields)

        self.store.transact_blocking(work)
        self.reload()
        self.monitoring.monitor.poke()

    def start(self) -> None:
        self.engine.startService()
        self.monitoring.monitor.startService()
        self.maintenance.startService()

    def restart_monitor(self, channels: Sequence[AlertChannel]) -> None:
        """A process restart as the monitor sees it: a new monitor on the same store."""
        self.monitoring.monitor.stopService()
        self.monitoring = self._monitoring(channels)
        self.api.context = replace(self.api.context, monitoring=self.monitoring)
        self.monitoring.monitor.startService()

    def stop(self) -> None:
        self.monitoring.monitor.stopService()
        self.maintenance.stopService()
        self.engine.stopService()
        sources.unregister(ORIGIN_SOURCE)
