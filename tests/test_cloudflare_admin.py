"""The Cloudflare admin routes end to end: admin API over loopback HTTP, fake Cloudflare over
loopback HTTP, memory store; then the stored certificate selected for its names (SNI step 2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from cryptography.hazmat.primitives import hashes
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher

from aegis.admin import AdminAddress, AdminContext, TokenVerifier, admin_site, api_class
from aegis.admin._cloudflare import routes
from aegis.admin._guards import token_digest
from aegis.certs.index import build_snapshot
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.localca import LocalCA
from aegis.sources.cloudflare import CloudflareServices, build_cloudflare
from aegis.sources.cloudflare.edge import audit_key
from aegis.store.memory import MemoryStore
from aegis.testing.cloudflare import Fault
from aegis.tls.selection import (
    STEP_DOMAIN_MATCH,
    MemoryCertificates,
    SelectionState,
    SelectionTable,
)
from aegis.tls.sni import https_factory
from tests.test_cloudflare_client import log_text
from tests.test_cloudflare_fake import (
    SERVICE_KEY,
    TOKEN,
    ZONE,
    Running,
    assert_all_valid,
    serve_fake,
)
from tests.test_tls_support import ClientCreator, echo_factory, handshake

ADMIN_TOKEN = "admin-token-0123456789abcdef"
API = api_class([routes], "CloudflareTestAPI")


@dataclass(frozen=True)
class CloudflareContext(AdminContext):
    """AdminContext plus the field this feature asks the lead to add."""

    cloudflare: CloudflareServices | None = None


@dataclass
class Admin:
    url: str
    store: MemoryStore
    wrapper: KeyWrapper
    services: CloudflareServices
    fallback: Any

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        response = await treq.request(
            method,
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}",
                **({"Content-Type": "application/json"} if body is not None else {}),
                **(headers or {}),
            },
            persistent=False,
        )
        raw = await response.content()
        return response.code, json.loads(raw) if raw else None, response.headers


@pytest.fixture
def admin(running_fake: Running, tmp_path: Path) -> Iterator[Admin]:
    store, wrapper = MemoryStore(), KeyWrapper(MasterKey.generate())
    local = LocalCA(tmp_path / "ssl").ensure(["localhost"], ["fallback.invalid"], datetime.now(UTC))
    services = build_cloudflare(
        reactor, running_fake.url, store, wrapper, timeout=1.0, backoff=0.05, max_attempts=2
    )
    ctx = CloudflareContext(
        store=store, wrapper=wrapper, local_ca=local, clock=reactor, cloudflare=services
    )
    bound: list[int] = []
    api = API(
        ctx,
        TokenVerifier(token_digest(ADMIN_TOKEN)),
        AdminAddress("127.0.0.1", lambda: bound[0] if bound else None),
    )
    port = reactor.listenTCP(0, admin_site(api, reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
    bound.append(port.getHost().port)
    yield Admin(f"http://127.0.0.1:{bound[0]}", store, wrapper, services, local.proxy)
    pytest_twisted.blockon(services.client.close())
    pytest_twisted.blockon(port.stopListening())


running_fake = pytest.fixture(serve_fake, name="running_fake")


@pytest.fixture
def captured() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


ORIGIN = "/api/v1/certificates/cloudflare-origin"
EDGE = "/api/v1/certificates/cloudflare-edge"


@pytest.mark.parametrize(
    ("auth", "kind"), [("api_token", "origin-rsa"), ("origin_ca_key", "origin-ecc")]
)
@pytest_twisted.ensureDeferred
async def test_origin_created_listed_and_selected_for_its_names(
    admin: Admin, running_fake: Running, captured: list[LogEvent], auth: str, kind: str
) -> None:
    secret = TOKEN if auth == "api_token" else SERVICE_KEY
    status, body, _ = await admin.call(
        "POST",
        ORIGIN,
        {
            "auth_method": auth,
            auth: secret,
            "hostnames": ["app.example.com", "*.example.com"],
            "request_type": kind,
            "requested_validity": 365,
            "zone_id": ZONE,
        },
    )
    assert status == 201, body
    assert list(body) == ["status", "id", "cloudflare_id", "expires_on", "requested_zone",
                          "auto_renew"]
    assert body["status"] == "created" and body["requested_zone"] == ZONE
    records = admin.store.transact_blocking(lambda txn: txn.list_certificates())
    assert [(r.id, r.source) for r in records] == [(body["id"], "cloudflare_origin")]
    # SNI selection step 2 (domain match) picks it for both names it covers.
    snapshot = build_snapshot(records, admin.wrapper)
    table = SelectionTable((), MemoryCertificates(snapshot.by_id.values()), admin.fallback)
    for name in ("app.example.com", "api.example.com"):
        chosen = table.select(name, datetime.now(UTC))
        assert (chosen.certificate.id, chosen.step) == (body["id"], STEP_DOMAIN_MATCH)
    assert table.select("example.com", datetime.now(UTC)).certificate is admin.fallback
    # And a real (in-memory) TLS handshake through the HTTPS listener's factory serves it.
    clock = Clock()
    clock.advance(datetime.now(UTC).timestamp())  # the handshake's "now" comes from here
    factory = https_factory(SelectionState(MemoryCertificates(snapshot.by_id.values()),
                                           admin.fallback), echo_factory(), clock)
    served = handshake(factory, ClientCreator(b"API.example.com"))
    assert served.ok
    leaf = served.peer_leaf()
    assert leaf is not None and leaf.fingerprint(hashes.SHA256()).hex() == (
        records[0].fingerprint_sha256)
    assert b"step=domain_match" in served.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    other = handshake(factory, ClientCreator(b"other.example.net")).peer_leaf()
    assert other is not None and other.fingerprint(hashes.SHA256()) != leaf.fingerprint(
        hashes.SHA256())
    assert_all_valid(running_fake.fake)
    assert secret not in log_text(captured) and secret not in json.dumps(body)
    assert "PRIVATE KEY" not in log_text(captured) + json.dumps(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hostnames": ["a.*.example.com"]}, "hostnames"),
        ({"hostnames": ["*.com"]}, "hostnames"),
        ({"hostnames": ["a.com;touch /tmp/x"]}, "hostnames"),
        ({"hostnames": []}, "hostnames"),
        ({"hostnames": ["a.example.com", "A.example.com."]}, "hostnames"),
        ({"requested_validity": 60}, "requested_validity"),
        ({"requested_validity": True}, "requested_validity"),
        ({"request_type": "origin-dsa"}, "request_type"),
        ({"auth_method": "password"}, "auth_method"),
        ({"api_token": "has space"}, "api_token"),
        ({"zone_id": "../../etc"}, "zone_id"),
        ({"unknown": 1}, "unknown"),
        ({"origin_ca_key": "x"}, "origin_ca_key"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_origin_validation_names_the_field(
    admin: Admin, running_fake: Running, body: dict[str, Any], field: str
) -> None:
    status, answer, _ = await admin.call(
        "POST", ORIGIN, {"api_token": TOKEN, "hostnames": ["a.example.com"], **body}
    )
    assert status == 400, answer
    assert answer["error"]["field"] == field
    assert running_fake.fake.exchanges == []  # refused before Cloudflare was called


@pytest.mark.parametrize(
    ("fault", "status", "code", "retry_after"),
    [
        (
            Fault(status=400, code=10000, message="Authentication error"),
            400,
            "cloudflare_auth",
            None,
        ),
        (
            Fault(status=429, code=1015, message="rate limited", retry_after="120"),
            502,
            "cloudflare_unavailable",
            "120",
        ),
        (Fault(status=503, code=1000, message="down"), 502, "cloudflare_unavailable", None),
        (Fault(delay=5.0), 504, "cloudflare_timeout", None),
        (Fault(certificate="wrong_key"), 502, "cloudflare_certificate_mismatch", None),
        (Fault(certificate="wrong_names"), 502, "cloudflare_certificate_mismatch", None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_origin_failures_are_clear_and_store_nothing(
    admin: Admin,
    running_fake: Running,
    captured: list[LogEvent],
    fault: Fault,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    running_fake.fake.inject(fault, times=2)
    answer_status, answer, headers = await admin.call(
        "POST",
        ORIGIN,
        {"api_token": TOKEN, "hostnames": ["a.example.com"], "request_type": "origin-ecc"},
    )
    assert (answer_status, answer["error"]["code"]) == (status, code), answer
    if fault.code is not None:
        assert f"{fault.code}: {fault.message}" in answer["error"]["message"]
    assert headers.getRawHeaders("retry-after") == ([retry_after] if retry_after else None)
    assert admin.store.transact_blocking(lambda txn: txn.list_certificates()) == []
    assert TOKEN not in log_text(captured) + json.dumps(answer)


@pytest_twisted.ensureDeferred
async def test_edge_order_then_status_until_active(
    admin: Admin, running_fake: Running, captured: list[LogEvent]
) -> None:
    status, pack, _ = await admin.call(
        "POST",
        EDGE,
        {"api_token": TOKEN, "zone_id": ZONE, "hostnames": ["example.com", "*.example.com"]},
    )
    assert status == 201, pack
    assert pack["status"] == "initializing" and pack["cloudflare_id"] == pack["id"]
    sent = json.loads(running_fake.fake.exchanges[0].body)
    assert sent == {
        "type": "advanced",
        "hosts": ["example.com", "*.example.com"],
        "validation_method": "txt",
        "validity_days": 90,
        "certificate_authority": "lets_encrypt",
    }
    audit = admin.store.transact_blocking(lambda txn: txn.get_setting(audit_key(pack["id"])))
    assert TOKEN not in audit and json.loads(audit)["status"] == "initializing"
    statuses = []
    for _ in range(4):
        code, current, _ = await admin.call(
            "GET", f"{EDGE}/{pack['id']}?zone_id={ZONE}", headers={"X-Cloudflare-Token": TOKEN}
        )
        assert code == 200, current
        statuses.append(current["status"])
    assert statuses == ["pending_validation", "pending_issuance", "pending_deployment", "active"]
    assert current["certificates"][0]["issuer"] == "Let's Encrypt"
    audit = admin.store.transact_blocking(lambda txn: txn.get_setting(audit_key(pack["id"])))
    assert json.loads(audit)["status"] == "active"
    assert admin.store.transact_blocking(lambda txn: txn.list_certificates()) == []
    assert_all_valid(running_fake.fake)
    assert TOKEN not in log_text(captured)


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (f"{EDGE}/abc?zone_id={ZONE}", {}, 400, "invalid_field"),
        (f"{EDGE}/abc", {"X-Cloudflare-Token": TOKEN}, 400, "invalid_field"),
        (f"{EDGE}/abc?zone_id={ZONE}", {"X-Cloudflare-Token": "wrong"}, 400, "cloudflare_auth"),
        (f"{EDGE}/abc?zone_id={ZONE}", {"X-Cloudflare-Token": TOKEN}, 404, "cloudflare_rejected"),
        (
            f"{EDGE}/abc?zone_id={'0' * 32}",
            {"X-Cloudflare-Token": TOKEN},
            400,
            "cloudflare_rejected",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_edge_status_errors(
    admin: Admin, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    got, answer, _ = await admin.call("GET", path, headers=headers)
    assert (got, answer["error"]["code"]) == (status, code), answer


@pytest.mark.parametrize(
    ("body", "status", "field_or_code"),
    [
        ({"validity_days": 30}, 400, "cloudflare_rejected"),  # Cloudflare: LE issues 90 days
        ({"hostnames": ["www.example.com"]}, 400, "cloudflare_rejected"),  # no zone apex
        ({"validity_days": 60}, 400, "validity_days"),
        ({"validation_method": "dns"}, 400, "validation_method"),
        ({"certificate_authority": "digicert"}, 400, "certificate_authority"),
        ({"cloudflare_branding": "yes"}, 400, "cloudflare_branding"),
        ({"zone_id": None}, 400, "zone_id"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_edge_order_rejections(
    admin: Admin, body: dict[str, Any], status: int, field_or_code: str
) -> None:
    got, answer, _ = await admin.call(
        "POST", EDGE, {"api_token": TOKEN, "zone_id": ZONE, "hostnames": ["example.com"], **body}
    )
    assert got == status, answer
    assert field_or_code in (answer["error"]["field"], answer["error"]["code"])


@pytest.mark.parametrize(
    ("method", "path"), [("POST", ORIGIN), ("POST", EDGE), ("GET", f"{EDGE}/abc?zone_id={ZONE}")]
)
@pytest_twisted.ensureDeferred
async def test_routes_need_the_admin_token(admin: Admin, method: str, path: str) -> None:
    got, answer, _ = await admin.call(
        method, path, {} if method == "POST" else None, headers={"Authorization": "Bearer wrong"}
    )
    assert got == 401 and answer["error"]["code"] == "invalid_token"


@pytest_twisted.ensureDeferred
async def test_without_cloudflare_services_503(running_fake: Running, tmp_path: Path) -> None:
    store, wrapper = MemoryStore(), KeyWrapper(MasterKey.generate())
    local = LocalCA(tmp_path / "ssl").ensure(["localhost"], ["f.invalid"], datetime.now(UTC))
    api = API(
        AdminContext(store=store, wrapper=wrapper, local_ca=local, clock=reactor),
        TokenVerifier(token_digest(ADMIN_TOKEN)),
        AdminAddress("127.0.0.1", lambda: None),
    )
    port = reactor.listenTCP(0, admin_site(api, reactor), interface="127.0.0.1")  # type: ignore[attr-defined]
    try:
        response = await treq.post(
            f"http://127.0.0.1:{port.getHost().port}{ORIGIN}",
            json.dumps({"api_token": TOKEN, "hostnames": ["a.example.com"]}).encode(),
            headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}",
                "Host": "127.0.0.1",
                "Content-Type": "application/json",
            },
            persistent=False,
        )
        assert response.code == 503
        await response.content()
    finally:
        await port.stopListening()
