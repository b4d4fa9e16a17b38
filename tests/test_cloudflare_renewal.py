"""Optional automatic renewal of Cloudflare Origin CA certificates, end to end.

The admin API over loopback HTTP (certificate and Cloudflare routes), the fake Cloudflare
over loopback HTTP, a SQLite store, and a real :class:`LifecycleEngine` whose schedule runs
on a ``Clock`` (moved, not slept) while the network runs on the real reactor. The engine's
issuer is the one the source registers (``SourceSpec.issuer``), with its own client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent

from aegis.admin import (
    AdminAddress,
    AdminContext,
    TokenVerifier,
    _certificates,
    _cloudflare,
    admin_site,
    api_class,
)
from aegis.admin._guards import token_digest
from aegis.certs import sources
from aegis.certs.lifecycle import IssuerContext, LifecycleEngine
from aegis.certs.lifecycle.policy import ceil_second, lifetime_renewal_time
from aegis.certs.lifecycle.transitions import issued_fields
from aegis.certs.registry import CertificateRegistry
from aegis.certs.service import CertificateService
from aegis.crypto.keys import generate_private_key, private_key_pem
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.crypto.masterkey import resolve_master_key, rotate_master_key
from aegis.crypto.sealed import SEALED_CREDENTIALS
from aegis.events import EventPublisher
from aegis.localca import LocalCA
from aegis.sources.cloudflare import SOURCE, Credentials, build_cloudflare
from aegis.store.records import CertificateRecord, HostFields
from aegis.store.sqlite import SQLiteStore
from aegis.testing.cloudflare import Fault
from aegis.testing.issuer import FakeCA
from aegis.threads import immediate_runner
from tests.test_acme_pebble import wait_until
from tests.test_cloudflare_client import log_text
from tests.test_cloudflare_fake import TOKEN, Running, serve_fake
from tests.test_cloudflare_origin import captured

ADMIN_TOKEN = "admin-token-renewal-0123456789"
API = api_class([_certificates.routes, _cloudflare.routes], "RenewalTestAPI")
ORIGIN = "/api/v1/certificates/cloudflare-origin"
running_fake = pytest.fixture(serve_fake, name="running_fake")
__all__ = ["captured"]  # the log-capturing fixture


class World:
    """One Aegis node: admin API, store, the engine with the source's own issuer."""

    def __init__(self, run: Running, tmp_path: Path) -> None:
        self.run = run
        self.data = tmp_path / "data"
        self.clock = Clock()
        self.clock.advance(reactor.seconds())  # type: ignore[attr-defined]
        run.fake.clock = self.clock  # Cloudflare signs for the moved time too
        self.store = SQLiteStore.open(self.data / "aegis.db", immediate_runner)
        self.wrapper = KeyWrapper(MasterKey.generate())
        registry = CertificateRegistry(self.store, self.wrapper, reactor)
        registry.load_blocking()
        self.events = EventPublisher(self.clock)
        self.events.keep = 50
        self.services = build_cloudflare(reactor, run.url, self.store, self.wrapper,
                                         events=self.events, timeout=2.0, backoff=0.05,
                                         max_attempts=2)
        self.context = IssuerContext(
            reactor=reactor, clock=self.clock, store=self.store, wrapper=self.wrapper,
            settings=SimpleNamespace(cloudflare_api_base=run.url), events=self.events)
        factory = sources.get(SOURCE).issuer
        assert factory is not None
        self.issuer = factory(self.context)
        self.engine = LifecycleEngine(
            self.clock, self.store, self.wrapper, {SOURCE: self.issuer},
            reload=registry.reload, publisher=self.context.events, jitter=lambda: 0.5)
        local = LocalCA(tmp_path / "ssl").ensure(["localhost"], ["fallback.invalid"],
                                                 datetime.now(UTC))
        ctx = AdminContext(
            store=self.store, wrapper=self.wrapper, local_ca=local, clock=reactor,
            certificates=CertificateService(self.store, self.wrapper, registry, reactor),
            cloudflare=self.services, lifecycle=self.engine, events=self.context.events)
        bound: list[int] = []
        api = API(ctx, TokenVerifier(token_digest(ADMIN_TOKEN)),
                  AdminAddress("127.0.0.1", lambda: bound[0] if bound else None))
        self.port = reactor.listenTCP(0, admin_site(api, reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
        bound.append(self.port.getHost().port)
        self.url = f"http://127.0.0.1:{bound[0]}"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await treq.request(
            method, self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                     **({"Content-Type": "application/json"} if body is not None else {})},
            persistent=False)
        raw = await response.content()
        return response.code, json.loads(raw) if raw else None

    async def request(self, **body: Any) -> dict[str, Any]:
        body = {"api_token": TOKEN, "hostnames": ["app.example.com"],
                "request_type": "origin-ecc", "requested_validity": 7, **body}
        status, answer = await self.call("POST", ORIGIN, body)
        assert status == 201, answer
        return answer  # type: ignore[no-any-return]

    def record(self, cert_id: int) -> CertificateRecord:
        return self.store.transact_blocking(lambda txn: txn.get_certificate(cert_id))

    def signed(self) -> int:
        """How many Origin CA certificates the fake Cloudflare has signed."""
        return len(self.run.fake.certificates)

    async def start(self) -> None:
        await self.engine.startService()

    async def close(self) -> None:
        if self.engine.running:
            await self.engine.stopService()
        for service in [s for _, s in self.context.services]:
            await service.stopService()
        await self.services.client.close()
        await self.port.stopListening()
        self.store.close()


@pytest.fixture
def world(running_fake: Running, tmp_path: Path) -> Iterator[World]:
    node = World(running_fake, tmp_path)
    yield node
    pytest_twisted.blockon(Deferred.fromCoroutine(node.close()))


def _stored_bytes(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in directory.iterdir() if path.is_file())


@pytest_twisted.ensureDeferred
async def test_auto_renew_keeps_the_credential_sealed_and_renews_in_place(
    world: World, captured: list[LogEvent]
) -> None:
    created = await world.request(auto_renew=True)
    assert created["auto_renew"] is True and TOKEN not in json.dumps(created)
    record = world.record(created["id"])
    assert record.auto_renew is True
    sealed = record.extra[SEALED_CREDENTIALS]
    assert Credentials.unseal(world.wrapper, record.uid, sealed).secret == TOKEN
    with pytest.raises(ValueError, match="does not open"):  # bound to this certificate
        Credentials.unseal(world.wrapper, "another-uid", sealed)
    assert TOKEN.encode() not in _stored_bytes(world.data)  # never in clear at rest
    status, shown = await world.call("GET", f"/api/v1/certificates/{record.id}")
    assert status == 200 and shown["auto_renew"] is True
    assert TOKEN not in json.dumps(shown) and sealed not in json.dumps(shown)
    world.store.transact_blocking(lambda txn: txn.add_host(HostFields(
        domain="app.example.com", upstream="http://127.0.0.1:1", ssl_mode="custom",
        ssl_cert_id=record.id)))

    await world.start()
    key = f"certificate:{record.uid}"
    state = world.engine.state(key)
    assert state is not None and state.status == "valid" and world.signed() == 1
    assert state.issuer == world.issuer.identity  # adopted with the identity that made it
    # Half of the lifetime (under 10 days), not at once: 3.5 days after it was signed.
    assert state.renews_at == ceil_second(lifetime_renewal_time(record.not_before,
                                                                record.not_after))
    assert state.renews_at - record.not_before < timedelta(days=3.51)

    world.clock.advance(timedelta(days=3.5).total_seconds() - 60)
    assert world.engine.attempts_started == 0
    world.clock.advance(120)
    await wait_until(lambda: world.engine.state(key).status == "valid"  # type: ignore[union-attr]
                     and world.signed() == 2)
    renewed = world.record(record.id)
    assert renewed.fingerprint_sha256 != record.fingerprint_sha256
    assert renewed.auto_renew is True and renewed.extra[SEALED_CREDENTIALS] == sealed
    assert renewed.not_after > record.not_after
    (host,) = world.store.transact_blocking(lambda txn: txn.hosts_using_certificate(record.id))
    assert host.domain == "app.example.com"  # the binding followed without an edit
    asked = list(world.run.fake.certificates.values())[-1]
    assert (asked["request_type"], asked["requested_validity"], asked["hostnames"]) == (
        "origin-ecc", 7, ["app.example.com"])
    # The new Cloudflare id is recorded (revocation and the dashboard need it).
    assert renewed.source_ref == str(asked["id"]) != record.source_ref
    assert TOKEN not in log_text(captured)


@pytest_twisted.ensureDeferred
async def test_off_by_default_nothing_renews(world: World) -> None:
    created = await world.request()
    record = world.record(created["id"])
    assert created["auto_renew"] is False and record.auto_renew is False
    assert SEALED_CREDENTIALS not in record.extra
    (obtained,) = [e for e in world.events.history if e.name == "cert_obtained"]
    assert obtained.fields["certificate_id"] == record.id
    assert obtained.fields["name"] == f"certificate:{record.uid}"
    assert obtained.fields["auto_renew"] is False and TOKEN not in repr(obtained)
    await world.start()
    assert world.engine.demanded() == {}
    world.clock.advance(timedelta(days=8).total_seconds())
    assert world.engine.attempts_started == 0 and world.signed() == 1


@pytest_twisted.ensureDeferred
async def test_patch_switches_renewal_off_and_on(world: World) -> None:
    created = await world.request(auto_renew=True)
    cert_id = created["id"]
    await world.start()
    uid = world.record(cert_id).uid
    assert world.engine.state(f"certificate:{uid}").status == "valid"  # type: ignore[union-attr]

    status, body = await world.call("PATCH", f"/api/v1/certificates/{cert_id}",
                                    {"auto_renew": False})
    assert status == 200 and body["auto_renew"] is False and body["id"] == cert_id
    assert SEALED_CREDENTIALS not in world.record(cert_id).extra
    assert world.engine.state(f"certificate:{uid}").status == "retired"  # type: ignore[union-attr]
    world.clock.advance(timedelta(days=5).total_seconds())
    assert world.engine.attempts_started == 0 and world.signed() == 1

    status, body = await world.call("PATCH", f"/api/v1/certificates/{cert_id}",
                                    {"auto_renew": True, "auth_method": "api_token",
                                     "api_token": TOKEN})
    assert status == 200 and body["auto_renew"] is True and TOKEN not in json.dumps(body)
    assert world.engine.state(f"certificate:{uid}") is not None
    # Renewed at once: its renewal time (3.5 days in) passed while it was off.
    await wait_until(lambda: world.signed() == 2)


def _custom_pair(names: list[str]) -> tuple[str, str]:
    now = datetime.now(UTC)
    key = generate_private_key("ecdsa-p256")
    chain = FakeCA(now).sign(key.public_key(), names, now - timedelta(minutes=1),
                             now + timedelta(days=30))
    return chain.decode(), private_key_pem(key).decode()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "auto_renew"),
        ({"auto_renew": "yes"}, 400, "auto_renew"),
        ({"auto_renew": True}, 400, "api_token"),
        ({"auto_renew": True, "auth_method": "origin_ca_key"}, 400, "origin_ca_key"),
        ({"auto_renew": False, "api_token": TOKEN}, 400, "api_token"),
        ({"auto_renew": False, "zone_id": "z"}, 400, None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_patch_refusals_name_the_field(
    world: World, body: dict[str, Any], status: int, field: str | None
) -> None:
    created = await world.request()
    code, answer = await world.call("PATCH", f"/api/v1/certificates/{created['id']}", body)
    assert code == status, answer
    if field is not None:
        assert answer["error"]["field"] == field
    assert TOKEN not in json.dumps(answer)
    assert world.record(created["id"]).auto_renew is False


@pytest_twisted.ensureDeferred
async def test_patch_of_another_source_or_unknown_id(world: World) -> None:
    cert_pem, key_pem = _custom_pair(["up.example.com"])
    code, uploaded = await world.call("POST", "/api/v1/certificates",
                                      {"cert_pem": cert_pem, "key_pem": key_pem})
    assert code == 201, uploaded
    code, answer = await world.call("PATCH", f"/api/v1/certificates/{uploaded['id']}",
                                    {"auto_renew": False})
    assert code == 409 and answer["error"]["code"] == "auto_renew_not_supported"
    assert "uploading a replacement" in answer["error"]["message"]
    code, answer = await world.call("PATCH", "/api/v1/certificates/999", {"auto_renew": False})
    assert code == 404


@pytest.mark.parametrize("auto_renew", [False, True])
@pytest_twisted.ensureDeferred
async def test_replace_refusal_says_how_it_is_really_renewed(
    world: World, auto_renew: bool
) -> None:
    """Fault 9: the refusal said "is renewed by Aegis" of a certificate nothing renewed."""
    created = await world.request(auto_renew=auto_renew)
    cert_pem, key_pem = _custom_pair(["app.example.com"])
    code, answer = await world.call("PUT", f"/api/v1/certificates/{created['id']}",
                                    {"cert_pem": cert_pem, "key_pem": key_pem})
    assert code == 409 and answer["error"]["code"] == "not_replaceable"
    message = answer["error"]["message"]
    if auto_renew:
        assert "renewed by Aegis automatically" in message
    else:
        assert "Aegis does not renew it automatically" in message
        assert "is renewed by Aegis" not in message
        assert "PATCH /api/v1/certificates/{id}" in message


@pytest_twisted.ensureDeferred
async def test_failed_renewal_keeps_the_old_certificate_and_honours_retry_after(
    world: World, captured: list[LogEvent]
) -> None:
    created = await world.request(auto_renew=True)
    record = world.record(created["id"])
    await world.start()
    key = f"certificate:{record.uid}"
    # 600 s is longer than the client waits by itself: the engine must wait instead.
    world.run.fake.inject(Fault(status=429, code=1015, message="You are being rate limited",
                                retry_after="600"))
    world.clock.advance(timedelta(days=3.5).total_seconds() + 1)
    await wait_until(lambda: world.engine.state(key).status == "failed")  # type: ignore[union-attr]
    state = world.engine.state(key)
    assert state is not None and state.failures == 1
    assert state.next_attempt_at is not None
    assert state.next_attempt_at >= world.engine.now() + timedelta(seconds=599)
    assert "rate limited" in (state.last_error or "") and TOKEN not in (state.last_error or "")
    assert world.record(record.id).fingerprint_sha256 == record.fingerprint_sha256
    world.clock.advance(300)
    assert world.engine.attempts_started == 1  # not before Retry-After
    world.clock.advance(301)
    await wait_until(lambda: world.engine.state(key).status == "valid"  # type: ignore[union-attr]
                     and world.signed() == 2)
    assert TOKEN not in log_text(captured)


def test_rotate_key_reseals_the_credential(tmp_path: Path) -> None:
    store = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    old, new = MasterKey.generate(), MasterKey.generate()
    store.transact_blocking(lambda txn: resolve_master_key(txn, old))
    now = datetime.now(UTC)
    key = generate_private_key("ecdsa-p256")
    chain = FakeCA(now).sign(key.public_key(), ["app.example.com"], now, now + timedelta(days=7))
    fields = issued_fields(chain, key, KeyWrapper(old), SOURCE, "test", uid="u1")
    credential = Credentials("origin_ca_key", "v1.0-secret-service-key")
    sealed = credential.seal(KeyWrapper(old), "u1")
    record = store.transact_blocking(lambda txn: txn.add_certificate(
        replace(fields, extra={**fields.extra, SEALED_CREDENTIALS: sealed})))
    count = store.transact_blocking(lambda txn: rotate_master_key(txn, old, new, True))
    assert count == 2  # the key and the credential
    rotated = store.transact_blocking(lambda txn: txn.get_certificate(record.id))
    value = rotated.extra[SEALED_CREDENTIALS]
    opened = Credentials.unseal(KeyWrapper(new), "u1", value)
    assert (opened.method, opened.secret) == ("origin_ca_key", "v1.0-secret-service-key")
    with pytest.raises(ValueError):
        Credentials.unseal(KeyWrapper(old), "u1", value)
    store.close()


@pytest.mark.parametrize(("spoil", "text"), [("wrong_key", "another key"),
                                             ("wrong_names", "other names")])
@pytest_twisted.ensureDeferred
async def test_a_renewal_for_another_key_or_names_is_refused(
    world: World, spoil: str, text: str
) -> None:
    """ACCEPTANCE 32 on the renewal path: nothing replaces the serving certificate."""
    created = await world.request(auto_renew=True)
    record = world.record(created["id"])
    await world.start()
    key = f"certificate:{record.uid}"
    world.run.fake.inject(Fault(certificate=spoil))
    world.clock.advance(timedelta(days=3.5).total_seconds() + 1)
    await wait_until(lambda: world.engine.state(key).status == "failed")  # type: ignore[union-attr]
    assert text in (world.engine.state(key).last_error or "")  # type: ignore[union-attr]
    assert world.record(record.id).fingerprint_sha256 == record.fingerprint_sha256
