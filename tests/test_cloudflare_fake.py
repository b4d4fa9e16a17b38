"""The fake Cloudflare API over real HTTP: its answers and the rules it enforces, each
exchange checked against Cloudflare's published OpenAPI subset with openapi-core.

Also home of the shared helpers (``openapi_errors``, ``running_fake``) the other
``test_cloudflare_*`` modules import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_twisted
import treq
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS30Validator
from twisted.internet import reactor
from twisted.web.server import Site

from aegis.crypto.keys import build_csr, generate_private_key
from aegis.sources.cloudflare.client import CloudflareClient
from aegis.testing.cloudflare import Exchange, FakeCloudflare, Fault

# A copy of the project's shared/spec/cloudflare-subset.openapi.json (Cloudflare's own
# published schema, subset), vendored so the suite never depends on files outside the repo.
SPEC_PATH = Path(
    os.environ.get(
        "AEGIS_CLOUDFLARE_OPENAPI",
        Path(__file__).resolve().parent / "data" / "cloudflare-subset.openapi.json",
    )
)
TOKEN = "cf-token-SECRET-5f0e1d2c3b4a"
SERVICE_KEY = "v1.0-service-key-SECRET-99aa88bb"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"

_SPEC_DICT = json.loads(SPEC_PATH.read_text())
OPENAPI = OpenAPI.from_dict(_SPEC_DICT)


def _deref(node: Any) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _deref(_SPEC_DICT["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        return {k: _deref(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deref(v) for v in node]
    return node


#: CLOUDFLARE.md: the published 4XX schemas contradict themselves (allOf success+failure);
#: error bodies are checked against the failure envelope alone.
FAILURE = OAS30Validator(
    _deref(
        {"$ref": "#/components/schemas/tls-certificates-and-hostnames_api-response-common-failure"}
    ),
    format_checker=OAS30Validator.FORMAT_CHECKER,
)


def _leaves(exc: BaseException) -> list[str]:
    """The schema errors behind an openapi-core exception, or its own message."""
    chain, found = [exc], []
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for link in chain:
        for error in getattr(link, "schema_errors", ()) or ():
            found.append(f"{list(error.absolute_path)}: {error.message}")
    return found or [f"{type(chain[-1]).__name__}: {str(chain[-1])[:200]}"]


def openapi_errors(ex: Exchange) -> dict[str, list[str]]:
    """How ``ex``'s request and response depart from the OpenAPI subset."""
    args = {k: v[0] for k, v in parse_qs(ex.query).items()}
    request = MockRequest(
        "https://api.cloudflare.com",
        ex.method.lower(),
        ex.path,
        args=args,
        headers=ex.headers,
        data=ex.body or None,
        content_type=ex.headers.get("content-type", "application/json"),
    )
    errors: dict[str, list[str]] = {"request": [], "response": []}
    try:
        OPENAPI.validate_request(request)
    except Exception as exc:
        errors["request"] = _leaves(exc)
    content_type = ex.response_headers.get("content-type", "")
    if ex.status == 200:
        response = MockResponse(ex.response, 200, ex.response_headers, content_type)
        try:
            OPENAPI.validate_response(request, response)
        except Exception as exc:
            errors["response"] = _leaves(exc)
    elif content_type == "application/json":
        errors["response"] = [
            f"{list(e.absolute_path)}: {e.message}"
            for e in FAILURE.iter_errors(json.loads(ex.response))
        ]
    return errors


def assert_all_valid(
    fake: FakeCloudflare, allowed: tuple[str, ...] = (), *, requests: bool = True
) -> None:
    """Every exchange so far matches the spec (requests too, unless ``requests`` is false:
    tests that send off-spec requests on purpose), except errors containing an ``allowed``
    text."""
    assert fake.exchanges, "no exchange happened"
    for ex in fake.exchanges:
        found = openapi_errors(ex)
        left = [
            e
            for e in found["response"] + (found["request"] if requests else [])
            if not any(a in e for a in allowed)
        ]
        assert not left, f"{ex.method} {ex.path} -> {ex.status}: {left}"


@dataclass
class Running:
    fake: FakeCloudflare
    url: str

    def client(self, **options: Any) -> CloudflareClient:
        options.setdefault("timeout", 5.0)
        options.setdefault("backoff", 0.05)
        return CloudflareClient.create(reactor, self.url, **options)


def serve_fake() -> Iterator[Running]:
    """The fake on a loopback port 0 with a token, a service key and zone example.com.
    Modules use it as ``running_fake = pytest.fixture(serve_fake, name="running_fake")``."""
    fake = FakeCloudflare(reactor)  # type: ignore[arg-type]
    fake.api_tokens.add(TOKEN)
    fake.service_keys.add(SERVICE_KEY)
    fake.add_zone("example.com", ZONE)
    port = reactor.listenTCP(0, Site(fake.resource()), interface="127.0.0.1")  # type: ignore[attr-defined]
    yield Running(fake, f"http://127.0.0.1:{port.getHost().port}/client/v4")
    pytest_twisted.blockon(port.stopListening())


running_fake = pytest.fixture(serve_fake, name="running_fake")


def origin_body(names: list[str], kind: str = "origin-ecc", **extra: Any) -> dict[str, Any]:
    key = generate_private_key("ecdsa-p256" if kind == "origin-ecc" else "rsa-2048")
    return {
        "csr": build_csr(key, names).decode(),
        "hostnames": names,
        "request_type": kind,
        **extra,
    }


async def post(run: Running, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    response = await treq.post(
        run.url + path,
        json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        persistent=False,
    )
    return response.code, json.loads(await response.content())


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest_twisted.ensureDeferred
async def test_origin_create_follows_spec_and_signs_with_test_ca(running_fake: Running) -> None:
    from cryptography import x509

    code, body = await post(
        running_fake, "/certificates", origin_body(["app.example.com", "*.example.com"]), BEARER
    )
    assert code == 200 and body["success"] is True, body
    leaf = x509.load_pem_x509_certificate(body["result"]["certificate"].encode())
    leaf.verify_directly_issued_by(running_fake.fake.ca.certificate)
    assert len(body["result"]["id"]) <= 32
    assert_all_valid(running_fake.fake)


@pytest.mark.parametrize(
    ("change", "code", "status"),
    [
        ({"headers": {"Authorization": "Bearer wrong-token"}}, 10000, 400),
        ({"headers": {"Authorization": "Basic abc"}}, 6003, 400),
        ({"headers": {"X-Auth-User-Service-Key": "wrong"}}, 10000, 400),
        ({"headers": {}}, 10000, 400),
        ({"requested_validity": 60}, 1001, 400),
        ({"request_type": "origin-dsa"}, 1001, 400),
        ({"request_type": "origin-rsa"}, 1001, 400),  # ECDSA CSR with origin-rsa
        ({"hostnames": ["a.*.example.com"]}, 1001, 400),
        ({"hostnames": ["*.*.example.com"]}, 1001, 400),
        ({"hostnames": ["*.com"]}, 1001, 400),
        ({"hostnames": []}, 1001, 400),
        ({"hostnames": [f"h{i}.example.com" for i in range(101)]}, 1001, 400),
        (
            {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"},
            1001,
            400,
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_origin_create_rejections(
    running_fake: Running, change: dict[str, Any], code: int, status: int
) -> None:
    headers = change.pop("headers", BEARER)
    body = {**origin_body(["app.example.com"]), **change}
    got_status, got = await post(running_fake, "/certificates", body, headers)
    assert (got_status, got["success"], got["errors"][0]["code"]) == (status, False, code)
    assert got["result"] is None
    assert not running_fake.fake.certificates
    assert_all_valid(running_fake.fake, requests=False)


@pytest_twisted.ensureDeferred
async def test_service_key_and_go_time(running_fake: Running) -> None:
    running_fake.fake.expires_on_format = "go"
    code, body = await post(
        running_fake,
        "/certificates",
        origin_body(["app.example.com"]),
        {"X-Auth-User-Service-Key": SERVICE_KEY},
    )
    assert code == 200
    assert body["result"]["expires_on"].endswith(" +0000 UTC")
    # The published schema says date-time; Cloudflare really sends Go's format.
    assert_all_valid(running_fake.fake, allowed=("is not a 'date-time'",))
    with pytest.raises(AssertionError):
        assert_all_valid(running_fake.fake)


@pytest_twisted.ensureDeferred
async def test_pack_order_and_status_progression(running_fake: Running) -> None:
    order = {
        "type": "advanced",
        "hosts": ["example.com", "*.example.com"],
        "validation_method": "txt",
        "validity_days": 90,
        "certificate_authority": "lets_encrypt",
        "cloudflare_branding": False,
    }
    code, body = await post(
        running_fake, f"/zones/{ZONE}/ssl/certificate_packs/order", order, BEARER
    )
    assert code == 200 and body["result"]["status"] == "initializing"
    pack_id = body["result"]["id"]
    seen = []
    for _ in range(5):
        response = await treq.get(
            f"{running_fake.url}/zones/{ZONE}/ssl/certificate_packs/{pack_id}",
            headers=BEARER,
            persistent=False,
        )
        result = json.loads(await response.content())["result"]
        seen.append(result["status"])
        if result["status"] == "pending_validation":
            assert result["validation_records"][0]["txt_name"] == "_acme-challenge.example.com"
    assert seen[-1] == "active" and result["certificates"][0]["issuer"] == "Let's Encrypt"
    assert_all_valid(running_fake.fake)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"hosts": ["www.example.com"]}, 1001),  # no apex
        ({"hosts": ["example.com", "other.org"]}, 1001),  # outside the zone
        ({"hosts": ["example.com"] + [f"h{i}.example.com" for i in range(50)]}, 1001),
        ({"validity_days": 30}, 1001),  # LE issues 90 days only
        ({"validity_days": 365, "certificate_authority": "google"}, 1001),
        ({"validation_method": "dns"}, 1001),
        ({"type": "universal"}, 1001),
        ({"zone": "0" * 32}, 7003),
        ({"headers": {"X-Auth-User-Service-Key": SERVICE_KEY}}, 10000),
    ],
)
@pytest_twisted.ensureDeferred
async def test_pack_order_rejections(
    running_fake: Running, change: dict[str, Any], code: int
) -> None:
    headers, zone = change.pop("headers", BEARER), change.pop("zone", ZONE)
    order = {
        "type": "advanced",
        "hosts": ["example.com"],
        "validation_method": "txt",
        "validity_days": 90,
        "certificate_authority": "lets_encrypt",
        **change,
    }
    status, body = await post(
        running_fake, f"/zones/{zone}/ssl/certificate_packs/order", order, headers
    )
    assert (status, body["errors"][0]["code"]) == (400, code)
    assert not running_fake.fake.packs
    assert_all_valid(running_fake.fake, requests=False)


@pytest_twisted.ensureDeferred
async def test_faults_are_served_in_order(running_fake: Running) -> None:
    fake = running_fake.fake
    fake.inject(Fault(status=429, code=1015, message="You are being rate limited", retry_after="3"))
    fake.inject(Fault(status=400, code=1100, message="Failed to write certificate to Database"))
    fake.inject(Fault(status=502, html=True))
    answers = []
    for _ in range(4):
        response = await treq.post(
            running_fake.url + "/certificates",
            json.dumps(origin_body(["a.example.com"])).encode(),
            headers=BEARER,
            persistent=False,
        )
        answers.append((response.code, response.headers.getRawHeaders("retry-after")))
        await response.content()
    assert answers == [(429, ["3"]), (400, None), (502, None), (200, None)]
    assert_all_valid(fake)


def test_runnable_prints_url_ca_and_credentials(tmp_path: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    process = subprocess.Popen(
        [sys.executable, "-m", "aegis.testing.cloudflare", "--port", "0", "--ca-dir",
         str(tmp_path), "--token", "tok-123"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().strip().split(": ", 1) for _ in range(5))
        url = lines["Fake Cloudflare API"]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/client/v4")
        assert Path(lines["Test CA"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert lines["API token"] == "tok-123"
        request = urllib.request.Request(f"{url}/zones/{ZONE}/ssl/certificate_packs/none",
                                         headers={"Authorization": "Bearer tok-123"})
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            assert json.loads(exc.read())["errors"][0]["code"] == 1002
        else:
            raise AssertionError("an unknown pack must be a 404")
    finally:
        process.terminate()
        process.wait(timeout=10)
