"""A whole certificate tree in memory for the lifecycle API tests: store, registry, SNI
selection, the real LifecycleEngine with an issuer that signs with a trustme CA, the
certificate service, and the admin routes of certificates, hosts and issuance served by
real twisted.web resources (StubTreq). Time is a Clock; nothing sleeps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from aegis.admin import AdminAddress, AdminContext, TokenVerifier, api_class
from aegis.admin._certificates import routes as certificate_routes
from aegis.admin._guards import token_digest
from aegis.admin._hosts import routes as host_routes
from aegis.admin._lifecycle import routes as issuance_routes
from aegis.certs import sources
from aegis.certs.lifecycle import LifecycleEngine
from aegis.certs.model import LoadedCertificate
from aegis.certs.registry import CertificateRegistry
from aegis.certs.service import CertificateService
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.events import Event, EventPublisher
from aegis.hosts.router import HostRouter
from aegis.hosts.state import ProxyState
from aegis.interfaces import ICertificateIssuer, IStore
from aegis.localca import LocalAuthority
from aegis.store.records import HostRecord
from aegis.tls.selection import SelectionState
from tests.helpers import host_fields
from tests.test_certs_api_harness import TOKEN, exchange, result_of
from tests.test_certs_helpers import NOW


def _automatic() -> sources.SourceSpec:
    spec = sources.for_mode("letsencrypt")  # the spec's ssl_mode names the source
    assert spec is not None
    return spec


AUTOMATIC = _automatic()
LifecycleAPI = api_class([certificate_routes, host_routes, issuance_routes], "LifecycleAPI")


class IssueFailed(Exception):
    """What the fake CA answers while told to fail (like a failed validation)."""


@implementer(ICertificateIssuer)
class SigningIssuer:
    """An ICertificateIssuer that signs every CSR with a trustme CA, valid 90 days from the
    clock's now. ``failing``: answer with :class:`IssueFailed`; ``holding``: keep the
    attempt open until :meth:`release` (an order in flight)."""

    key_kind = "ecdsa-p256"

    def __init__(self, ca: trustme.CA, clock: Clock, source: str) -> None:
        self.source = source
        self.identity = "fake-ca https://ca.invalid/directory"
        self._ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        self._ca_pem = ca.cert_pem.bytes()
        self._ca_cert = x509.load_pem_x509_certificate(self._ca_pem)
        self._clock = clock
        self.calls: list[tuple[str, ...]] = []
        self.failing = False
        self.holding = False
        self.held: list[tuple[Deferred[bytes], bytes, tuple[str, ...]]] = []

    def issue(self, csr_pem: bytes, names: Sequence[str], options: Any = None) -> Deferred[bytes]:
        self.calls.append(tuple(names))
        if self.failing:
            return fail(IssueFailed(f"validation of {', '.join(names)} failed: "
                                    "connection refused"))
        if self.holding:
            waiting: Deferred[bytes] = Deferred()
            self.held.append((waiting, csr_pem, tuple(names)))
            return waiting
        return succeed(self.sign(csr_pem, names))

    def release(self) -> None:
        held, self.held = self.held, []
        for waiting, csr_pem, names in held:
            waiting.callback(self.sign(csr_pem, names))

    def sign(self, csr_pem: bytes, names: Sequence[str]) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        now = datetime.fromtimestamp(self._clock.seconds(), UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + self._ca_pem

    def abandon(self, names: Sequence[str]) -> Deferred[None]:
        return succeed(None)

    def renewal_window(self, not_before: datetime, not_after: datetime) -> None:
        return None


class FixedFallback:
    """The proxy fallback re-issuer of :class:`ProxyState`, always the same certificate
    (its re-issue is tested in tests/test_localca.py)."""

    def __init__(self, certificate: LoadedCertificate) -> None:
        self._certificate = certificate

    def reissue(self, host_names: Sequence[str]) -> Deferred[LoadedCertificate]:
        return succeed(self._certificate)


class Rig:
    """The tree; ``publish()`` is what a proxy reload does (registry, then hosts)."""

    def __init__(self, store: IStore, authority: LocalAuthority, ca: trustme.CA) -> None:
        self.store = store
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        self.wrapper = KeyWrapper(MasterKey.generate())
        self.registry = CertificateRegistry(store, self.wrapper, self.clock)
        self.registry.load_blocking()
        self.events: list[Event] = []
        self.publisher = EventPublisher(self.clock)
        self.publisher.subscribe(self.events.append)
        self.issuer = SigningIssuer(ca, self.clock, AUTOMATIC.name)
        self.engine = LifecycleEngine(
            self.clock, store, self.wrapper, {AUTOMATIC.name: self.issuer},
            lambda: self.proxy.reload(), publisher=self.publisher, jitter=lambda: 0.5,
        )
        self.selection = SelectionState(self.registry, authority.proxy, self.engine)
        router = HostRouter(self.selection, lambda: 8443, None, self.now)
        # As in aegis.assembly: a host change has the engine re-read the demand, without
        # waiting for it (here: on the next turn of the clock).
        self.proxy = ProxyState(
            store, self.registry, self.selection, router, FixedFallback(authority.proxy), (),
            lambda hosts: self.clock.callLater(0, self.engine.refresh),
        )
        self.service = CertificateService(
            store, self.wrapper, self.registry, self.clock, publish=self.publish,
            selection=self.selection, lifecycle=self.engine,
        )
        context = AdminContext(
            store=store, wrapper=self.wrapper, local_ca=authority, clock=self.clock,
            certificates=self.service, selection=self.selection, proxy=self.proxy,
            lifecycle=self.engine, events=self.publisher,
        )
        api = LifecycleAPI(context, TokenVerifier(token_digest(TOKEN)),
                           AdminAddress(None, lambda: 9443))
        self.stub = StubTreq(api.resource())
        result_of(self.engine.startService())

    def publish(self) -> Deferred[None]:
        return self.proxy.reload()

    def changed(self) -> None:
        """After a write to the store behind the API's back: reload, then the engine
        re-reads the demand (as ProxyState's hosts_changed does)."""
        result_of(self.publish())
        result_of(self.engine.refresh())

    def add_host(self, domain: str, **fields: Any) -> HostRecord:
        host: HostRecord = self.store.transact_blocking(
            lambda txn: txn.add_host(host_fields(domain, **fields)))
        self.changed()
        return host

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        code, payload = exchange(self.stub, method, path, headers, data)
        assert b"pending_key" not in payload
        return code, json.loads(payload) if payload else None

    def certificate(self, cert_id: int) -> dict[str, Any]:
        code, body = self.call("GET", f"/api/v1/certificates/{cert_id}")
        assert code == 200, body
        return dict(body)

    def served(self, name: str) -> tuple[str, int | None]:
        chosen = self.selection.current().select(name, self.now())
        return chosen.step, chosen.certificate.id

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def named(self, event: str) -> list[Event]:
        return [e for e in self.events if e.name == event]
