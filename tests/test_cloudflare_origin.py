"""Origin CA through the service layer, against the fake Cloudflare over real HTTP.

Each test checks what was stored (or that nothing was), that every exchange matches the
OpenAPI subset, and that no credential reaches the captured log.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.logger import LogEvent, globalLogPublisher

from aegis.certs.loading import load_record
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.sources.cloudflare import (
    CertificateMismatch,
    CloudflareError,
    OriginCertificates,
    parse_origin_order,
)
from aegis.store.memory import MemoryStore
from aegis.store.records import CertificateRecord
from aegis.testing.cloudflare import Fault
from tests.test_cloudflare_client import log_text
from tests.test_cloudflare_fake import (
    SERVICE_KEY,
    TOKEN,
    ZONE,
    Running,
    assert_all_valid,
    serve_fake,
)

WRAPPER = KeyWrapper(MasterKey.generate())


running_fake = pytest.fixture(serve_fake, name="running_fake")


@pytest.fixture
def captured() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


class Setup:
    def __init__(self, run: Running, **client_options: Any) -> None:
        self.run = run
        self.store = MemoryStore()
        self.client = run.client(**client_options)
        self.notified: list[CertificateRecord] = []
        self.service = OriginCertificates(
            self.client,
            self.store,
            WRAPPER,
            reactor,  # type: ignore[arg-type]
            on_stored=self.notified.append,
        )

    def stored(self) -> list[CertificateRecord]:
        return self.store.transact_blocking(lambda txn: txn.list_certificates())

    async def request(self, **body: Any) -> dict[str, Any]:
        body.setdefault("api_token", TOKEN)
        body.setdefault("hostnames", ["app.example.com"])
        try:
            return await self.service.request(parse_origin_order(body))
        finally:
            await self.client.close()


@pytest.mark.parametrize("auth", ["api_token", "origin_ca_key"])
@pytest.mark.parametrize(
    ("request_type", "key_type"), [("origin-rsa", "rsa-2048"), ("origin-ecc", "ecdsa-p256")]
)
@pytest_twisted.ensureDeferred
async def test_origin_certificate_created_and_stored(
    running_fake: Running,
    captured: list[LogEvent],
    auth: str,
    request_type: str,
    key_type: str,
) -> None:
    setup = Setup(running_fake)
    secret = TOKEN if auth == "api_token" else SERVICE_KEY
    body = {
        "auth_method": auth,
        auth: secret,
        "request_type": request_type,
        "hostnames": ["app.example.com", "*.example.com"],
        "zone_id": ZONE,
    }
    if auth != "api_token":
        body["api_token"] = ""
    response = await setup.request(**body)
    assert set(response) == {"status", "id", "cloudflare_id", "expires_on", "requested_zone",
                             "auto_renew"}
    assert response["status"] == "created" and response["requested_zone"] == ZONE
    assert response["auto_renew"] is False
    (record,) = setup.stored()
    assert response["id"] == record.id and setup.notified == [record]
    assert record.source == "cloudflare_origin" and record.key_type == key_type
    assert record.source_ref == response["cloudflare_id"]
    assert response["cloudflare_id"] in running_fake.fake.certificates
    assert dict(record.extra) == {  # public facts only: no credential without auto_renew
        "requested_zone": ZONE, "requested_validity": 5475,
        "issued_by": f"cloudflare-origin {running_fake.url}"}
    assert record.auto_renew is False
    assert set(record.domains) == {"app.example.com", "*.example.com"}
    assert record.chain_complete is False
    assert response["expires_on"] == record.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    loaded = load_record(record, WRAPPER)  # the sealed key opens and matches the leaf
    assert loaded.id == record.id
    sent = running_fake.fake.exchanges[0]
    assert "PRIVATE KEY" not in sent.body.decode()
    assert ("authorization" in sent.headers) == (auth == "api_token")
    assert_all_valid(running_fake.fake)
    text = log_text(captured)
    assert secret not in text and "PRIVATE KEY" not in text
    assert ("deprecat" in text) == (auth == "origin_ca_key")


@pytest.mark.parametrize("days", [7, 30, 90, 365, 730, 1095, 5475])
@pytest_twisted.ensureDeferred
async def test_every_allowed_validity(running_fake: Running, days: int) -> None:
    setup = Setup(running_fake)
    response = await setup.request(request_type="origin-ecc", requested_validity=days)
    (record,) = setup.stored()
    lifetime = record.not_after - datetime.now(UTC)
    assert timedelta(days=days) - timedelta(minutes=5) < lifetime <= timedelta(days=days)
    assert running_fake.fake.certificates[response["cloudflare_id"]]["requested_validity"] == days
    assert_all_valid(running_fake.fake)


@pytest_twisted.ensureDeferred
async def test_default_validity_and_idn_wildcard(running_fake: Running) -> None:
    setup = Setup(running_fake)
    await setup.request(request_type="origin-ecc", hostnames=["*.Bücher.example", "API.x.io."])
    (record,) = setup.stored()
    assert set(record.domains) == {"*.xn--bcher-kva.example", "api.x.io"}
    sent = running_fake.fake.certificates.popitem()[1]
    assert sent["requested_validity"] == 5475
    assert sent["hostnames"] == ["*.xn--bcher-kva.example", "api.x.io"]


@pytest_twisted.ensureDeferred
async def test_go_time_format_and_long_ids(running_fake: Running) -> None:
    running_fake.fake.expires_on_format = "go"
    running_fake.fake.long_ids = True
    setup = Setup(running_fake)
    response = await setup.request(request_type="origin-ecc", requested_validity=90)
    assert len(response["cloudflare_id"]) == 48 and response["cloudflare_id"].isdigit()
    (record,) = setup.stored()
    assert response["expires_on"] == record.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    raw = running_fake.fake.certificates[response["cloudflare_id"]]["expires_on"]
    assert raw.endswith("+0000 UTC")


@pytest.mark.parametrize(
    ("faults", "kind", "status", "attempts"),
    [
        ([Fault(status=400, code=10000, message="Authentication error")], "auth", 400, 1),
        (
            [Fault(status=429, code=1015, message="You are being rate limited", retry_after="1")]
            * 3,
            "unavailable",
            502,
            3,
        ),
        ([Fault(status=503, code=1000, message="Service unavailable")] * 3, "unavailable", 502, 3),
        ([Fault(status=502, html=True)] * 3, "unavailable", 502, 3),
        (
            [Fault(status=400, code=1100, message="Failed to write certificate to Database")] * 3,
            "unavailable",
            502,
            3,
        ),
        ([Fault(delay=3.0)] * 3, "timeout", 504, 3),
        ([Fault(status=400, code=1201, message="CA signing failure")], "rejected", 400, 1),
    ],
)
@pytest_twisted.ensureDeferred
async def test_failures_store_nothing_and_never_log_the_token(
    running_fake: Running,
    captured: list[LogEvent],
    faults: list[Fault],
    kind: str,
    status: int,
    attempts: int,
) -> None:
    for fault in faults:
        running_fake.fake.inject(fault)
    setup = Setup(running_fake, max_attempts=3, timeout=0.5)
    started = reactor.seconds()  # type: ignore[attr-defined]
    with pytest.raises(CloudflareError) as info:
        await setup.request(request_type="origin-ecc")
    error = info.value
    assert (error.kind, error.admin_status) == (kind, status)
    assert len(running_fake.fake.exchanges) == attempts
    assert setup.stored() == [] and running_fake.fake.certificates == {}
    if faults[0].code is not None:
        assert f"{faults[0].code}: {faults[0].message}" in str(error)
        assert error.as_json()["cloudflare_errors"][0]["code"] == faults[0].code
    if faults[0].retry_after:
        assert reactor.seconds() - started >= 2.0  # type: ignore[attr-defined]
    assert TOKEN not in log_text(captured) + str(error) + repr(error.as_json())
    assert_all_valid(running_fake.fake, requests=True)


@pytest.mark.parametrize(
    "first",
    [
        Fault(status=429, code=1015, message="You are being rate limited", retry_after="1"),
        Fault(status=500, code=1000, message="Internal error"),
        Fault(status=400, code=1100, message="Failed to write certificate to Database"),
        Fault(delay=2.0),
    ],
)
@pytest_twisted.ensureDeferred
async def test_transient_failure_then_success(running_fake: Running, first: Fault) -> None:
    running_fake.fake.inject(first)
    setup = Setup(running_fake, timeout=0.5)
    response = await setup.request(request_type="origin-ecc")
    assert response["status"] == "created"
    assert len(setup.stored()) == 1 and len(running_fake.fake.exchanges) == 2


@pytest.mark.parametrize(
    ("spoil", "text"), [("wrong_names", "other names"), ("wrong_key", "another key")]
)
@pytest_twisted.ensureDeferred
async def test_certificate_for_other_names_or_key_is_refused(
    running_fake: Running,
    captured: list[LogEvent],
    spoil: str,
    text: str,
) -> None:
    running_fake.fake.inject(Fault(certificate=spoil))
    setup = Setup(running_fake)
    with pytest.raises(CertificateMismatch) as info:
        await setup.request(request_type="origin-ecc")
    assert text in str(info.value) and info.value.admin_status == 502
    assert setup.stored() == [] and setup.notified == []
    assert TOKEN not in log_text(captured)


@pytest_twisted.ensureDeferred
async def test_certificate_for_more_names_than_asked_is_refused(running_fake: Running) -> None:
    # Cloudflare signs the request's hostnames; a proxy rewriting them must not get through.
    setup = Setup(running_fake)
    order = parse_origin_order(
        {"api_token": TOKEN, "hostnames": ["app.example.com"], "request_type": "origin-ecc"}
    )
    original = setup.client.create_origin_certificate

    def widened(credentials: Any, body: Any) -> Any:
        return original(credentials, {**body, "hostnames": [*body["hostnames"], "x.example.com"]})

    setup.client.create_origin_certificate = widened  # type: ignore[method-assign]
    with pytest.raises(CertificateMismatch, match=r"unexpected: x\.example\.com"):
        await setup.service.request(order)
    await setup.client.close()
    assert setup.stored() == []


def test_leaf_is_signed_by_fake_ca(running_fake: Running) -> None:
    leaf_pem = running_fake.fake.ca.sign(
        running_fake.fake.ca.key.public_key(), ["a.example.com"], datetime.now(UTC), 7
    )
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    leaf.verify_directly_issued_by(running_fake.fake.ca.certificate)
