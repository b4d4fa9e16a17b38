"""The admin API request pipeline through real twisted.web resources (StubTreq, in memory):
auth on the whole route table, Host/Origin guards, content types, limits, error shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from aegis.admin import (
    AdminAddress,
    AdminAPI,
    AdminContext,
    Field,
    JsonResponse,
    ObjectSchema,
    RouteTable,
    TokenVerifier,
    api_class,
    invalid,
)
from aegis.admin._guards import token_digest
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.localca import LocalAuthority, LocalCA, admin_certificate_names
from aegis.store.errors import Conflict, StoreBusy
from aegis.store.memory import MemoryStore

TOKEN = "t0ken-for-tests-0123456789abcdef"
BASE = "https://127.0.0.1:9443"
# a new public route must be added here on purpose (and to _routing.PUBLIC_ROUTES)
PUBLIC_OPERATIONS = {"get_admin_trust_bundle", "get_health"}

_authorities: dict[Path, LocalAuthority] = {}


def authority(directory: Path) -> LocalAuthority:
    if directory not in _authorities:
        _authorities[directory] = LocalCA(directory).ensure(
            admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC)
        )
    return _authorities[directory]


def make_context(cache: Path, store: MemoryStore | None = None) -> AdminContext:
    return AdminContext(
        store=store or MemoryStore(),
        wrapper=KeyWrapper(MasterKey.generate()),
        local_ca=authority(cache),
        clock=Clock(),
    )


def make_api(
    cache: Path,
    cls: type[AdminAPI] = AdminAPI,
    port: int = 9443,
    bind: str | None = None,
    store: MemoryStore | None = None,
) -> AdminAPI:
    return cls(
        make_context(cache, store),
        TokenVerifier(token_digest(TOKEN)),
        AdminAddress(bind, lambda: port),
    )


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred did not fire"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class Client:
    def __init__(self, api: AdminAPI) -> None:
        self.stub = StubTreq(api.resource())

    def call(
        self,
        method: str,
        path: str,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        base: str = BASE,
    ) -> tuple[Any, bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        d = self.stub.request(method, base + path, headers=sent, data=data)
        self.stub.flush()
        response = result_of(d)
        body = self.stub.content(response)
        self.stub.flush()
        return response, result_of(body)


def error_of(body: bytes) -> dict[str, Any]:
    document = json.loads(body)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"code", "message", "field"}
    return dict(document["error"])


def concrete_path(path: str) -> str:
    return re.sub(
        r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>", lambda m: "1" if m.group(1) == "int" else "x", path
    )


# --- a route table only for these tests -----------------------------------------------------

test_routes = RouteTable(tag="test")
ECHO = ObjectSchema(
    {
        "name": Field("string", required=True, max_length=20),
        "count": Field("integer"),
        "tags": Field("array", items=Field("string")),
    }
)


@test_routes.route(
    "POST", "/api/v1/test/echo", summary="Echo", body=ECHO, responses={201: "Created"}
)
async def echo(ctx: AdminContext, request: IRequest, body: dict[str, Any]) -> JsonResponse:
    return JsonResponse(body, status=201)


@test_routes.route("GET", "/api/v1/test/certificates/<int:cert_id>", summary="Missing")
async def missing(ctx: AdminContext, request: IRequest, cert_id: int) -> Any:
    return await ctx.store.transact(lambda txn: txn.get_certificate(cert_id))


@test_routes.route("DELETE", "/api/v1/test/busy", summary="Busy", responses={204: "Gone"})
async def busy(ctx: AdminContext, request: IRequest) -> None:
    raise StoreBusy("database is locked")


@test_routes.route("PUT", "/api/v1/test/conflict", summary="Conflict", body=ECHO)
async def conflict(ctx: AdminContext, request: IRequest, body: dict[str, Any]) -> None:
    raise Conflict("app.example.com belongs to host 3", field="domain")


@test_routes.route("PATCH", "/api/v1/test/invalid", summary="Invalid", body=ECHO)
async def bad_key(ctx: AdminContext, request: IRequest, body: dict[str, Any]) -> None:
    raise invalid("key_pem", "the key does not match the certificate", "key_mismatch")


@test_routes.route("GET", "/api/v1/test/boom", summary="Boom")
async def boom(ctx: AdminContext, request: IRequest) -> None:
    raise RuntimeError("secret s3cr3t-value -----BEGIN PRIVATE KEY-----")


PipelineAPI = api_class([test_routes], "PipelineAPI")


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "admin-api-ca"


@pytest.fixture
def client(cache: Path) -> Client:
    return Client(make_api(cache))


@pytest.fixture
def test_client(cache: Path) -> Client:
    return Client(make_api(cache, PipelineAPI))


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# --- authentication over the whole route table ---------------------------------------------


@pytest.mark.parametrize("cls", [AdminAPI, PipelineAPI], ids=["production", "test-routes"])
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN + "x", ""])
def test_every_route_refuses_missing_or_wrong_token(
    cache: Path, cls: type[AdminAPI], token: str | None
) -> None:
    client = Client(make_api(cache, cls))
    checked = 0
    for op in cls.operations:
        headers = {"Content-Type": "application/json"}
        response, body = client.call(
            op.method,
            concrete_path(op.path),
            token=token,
            headers=headers,
            data=b"{}" if op.body else None,
        )
        if op.operation_id in PUBLIC_OPERATIONS:
            # health answers 503 here: this test's context has no monitor
            assert op.public and response.code == (503 if op.path.endswith("health") else 200)
            continue
        assert response.code == 401, (op.method, op.path)
        assert response.headers.getRawHeaders("WWW-Authenticate")[0].startswith("Bearer")
        assert error_of(body)["code"] in ("unauthorized", "invalid_token")
        checked += 1
    assert checked == len([op for op in cls.operations if not op.public]) >= 1


def test_public_routes_are_only_the_expected_ones() -> None:
    assert {op.operation_id for op in AdminAPI.operations if op.public} == PUBLIC_OPERATIONS


def test_other_authorization_schemes_are_refused(client: Client) -> None:
    response, _ = client.call(
        "GET", "/api/v1/openapi.json", token=None, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert response.code == 401


def test_correct_token_is_accepted(client: Client) -> None:
    response, body = client.call("GET", "/api/v1/openapi.json")
    assert response.code == 200
    assert json.loads(body)["openapi"].startswith("3.")
    assert response.headers.getRawHeaders("Cache-Control") == ["no-store"]


def test_unknown_routes_need_the_token_then_answer_404_and_405(client: Client) -> None:
    response, body = client.call("GET", "/api/v1/nope", token=None)
    assert response.code == 401
    response, body = client.call("GET", "/api/v1/nope")
    assert response.code == 404 and error_of(body)["code"] == "not_found"
    response, body = client.call("GET", "/elsewhere")
    assert response.code == 404 and error_of(body)["code"] == "not_found"
    response, body = client.call("DELETE", "/api/v1/openapi.json")
    assert response.code == 405 and error_of(body)["code"] == "method_not_allowed"
    assert "GET" in response.headers.getRawHeaders("Allow")[0]


# --- Host and Origin guards ----------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "https://evil.example:9443",
        "https://127.0.0.1:9444",
        "https://127.0.0.1.nip.io:9443",
        "https://10.0.0.1:9443",
    ],
)
def test_foreign_host_is_refused_even_with_the_token(client: Client, base: str) -> None:
    response, body = client.call("GET", "/api/v1/openapi.json", base=base)
    assert response.code == 403 and error_of(body)["code"] == "forbidden_host"
    response, body = client.call("GET", "/api/v1/settings/admin-trust-bundle", base=base)
    assert response.code == 403


@pytest.mark.parametrize(
    "host", ["localhost:9443", "[::1]:9443", "LOCALHOST:9443", "127.0.0.1:9443"]
)
def test_admin_host_names_are_accepted(client: Client, host: str) -> None:
    response, _ = client.call("GET", "/api/v1/openapi.json", headers={"Host": host})
    assert response.code == 200


@pytest.mark.parametrize("host", ["[::1]:9444", "[::2]:9443", "localhost", "127.0.0.1"])
def test_foreign_host_header_is_refused(client: Client, host: str) -> None:
    response, _ = client.call("GET", "/api/v1/openapi.json", headers={"Host": host})
    assert response.code == 403


def test_configured_bind_address_is_accepted(cache: Path) -> None:
    client = Client(make_api(cache, bind="192.0.2.10"))
    response, _ = client.call("GET", "/api/v1/openapi.json", base="https://192.0.2.10:9443")
    assert response.code == 200


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://127.0.0.1:9443",
        "https://127.0.0.1:9444",
        "https://127.0.0.1:9443.evil.example",
    ],
)
def test_cross_site_origin_is_refused(test_client: Client, origin: str) -> None:
    response, body = test_client.call(
        "POST",
        "/api/v1/test/echo",
        headers={"Origin": origin, "Content-Type": "application/json"},
        data=b'{"name": "a"}',
    )
    assert response.code == 403 and error_of(body)["code"] == "forbidden_origin"


def test_same_origin_is_accepted(test_client: Client) -> None:
    response, body = test_client.call(
        "POST",
        "/api/v1/test/echo",
        headers={"Origin": "https://127.0.0.1:9443", "Content-Type": "application/json"},
        data=b'{"name": "a", "count": 2, "tags": ["x"]}',
    )
    assert response.code == 201
    assert json.loads(body) == {"name": "a", "count": 2, "tags": ["x"]}


# --- content type, body, JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ],
)
def test_write_without_json_content_type_is_415(
    test_client: Client, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response, body = test_client.call(
        "POST", "/api/v1/test/echo", headers=headers, data=b'{"name": "a"}'
    )
    assert response.code == 415 and error_of(body)["code"] == "unsupported_media_type"


def test_json_content_type_with_charset_is_accepted(test_client: Client) -> None:
    response, _ = test_client.call(
        "POST",
        "/api/v1/test/echo",
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
        data=b'{"name": "a"}',
    )
    assert response.code == 201


def test_two_megabyte_body_is_413(test_client: Client) -> None:
    response, body = test_client.call(
        "POST",
        "/api/v1/test/echo",
        headers={"Content-Type": "application/json"},
        data=b'{"name": "' + b"a" * (2 * 1024 * 1024) + b'"}',
    )
    assert response.code == 413 and error_of(body)["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b'{"name": "\xff"}', "invalid_encoding", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"name": "a", "extra": 1}', "unknown_field", "extra"),
        (b'{"name": 5}', "wrong_type", "name"),
        (b'{"count": 1}', "missing_field", "name"),
        (b'{"name": "a\\u0000b"}', "nul_character", "name"),
        (b'{"name": "a", "tags": [' + b"[" * 40 + b"]" * 40 + b"]}", "too_deep", None),
        (b"", "missing_body", None),
    ],
)
def test_bad_json_is_400_naming_the_field(
    test_client: Client, data: bytes, code: str, field: str | None
) -> None:
    response, body = test_client.call(
        "POST", "/api/v1/test/echo", headers={"Content-Type": "application/json"}, data=data
    )
    assert response.code == 400
    error = error_of(body)
    assert (error["code"], error["field"]) == (code, field)


def test_body_on_a_route_without_one_is_refused(client: Client) -> None:
    response, body = client.call("GET", "/api/v1/openapi.json", data=b"surprise")
    assert response.code == 400 and error_of(body)["code"] == "unexpected_body"


# --- error mapping -------------------------------------------------------------------------


def test_store_errors_map_to_http(test_client: Client) -> None:
    response, body = test_client.call("GET", "/api/v1/test/certificates/77")
    assert response.code == 404 and error_of(body)["code"] == "not_found"
    response, body = test_client.call("DELETE", "/api/v1/test/busy")
    assert response.code == 503 and error_of(body)["code"] == "store_busy"
    assert response.headers.getRawHeaders("Retry-After") == ["1"]
    response, body = test_client.call(
        "PUT",
        "/api/v1/test/conflict",
        headers={"Content-Type": "application/json"},
        data=b'{"name": "a"}',
    )
    assert response.code == 409 and error_of(body)["field"] == "domain"


def test_validation_helper_names_the_field(test_client: Client) -> None:
    response, body = test_client.call(
        "PATCH",
        "/api/v1/test/invalid",
        headers={"Content-Type": "application/json"},
        data=b'{"name": "a"}',
    )
    assert response.code == 400
    assert error_of(body) == {
        "code": "key_mismatch",
        "field": "key_pem",
        "message": "the key does not match the certificate",
    }


def test_unexpected_exception_is_a_generic_500_and_logged_without_its_message(
    test_client: Client, logged: list[LogEvent]
) -> None:
    response, body = test_client.call("GET", "/api/v1/test/boom")
    assert response.code == 500
    error = error_of(body)
    assert error["code"] == "internal_error"
    assert b"s3cr3t" not in body and b"Traceback" not in body and b"PRIVATE" not in body
    text = "\n".join(formatEvent(event) for event in logged)
    assert "RuntimeError" in text and "/api/v1/test/boom" in text
    assert "s3cr3t" not in text and "PRIVATE KEY" not in text


def test_no_response_or_log_contains_the_token(test_client: Client, logged: list[LogEvent]) -> None:
    for token in (TOKEN, "wrong-token-0123456789"):
        for op in PipelineAPI.operations:
            _, body = test_client.call(
                op.method,
                concrete_path(op.path),
                token=token,
                headers={"Content-Type": "application/json"},
                data=b'{"name": "a"}' if op.body else None,
            )
            assert TOKEN.encode() not in body and b"wrong-token" not in body
    text = "\n".join(formatEvent(event) for event in logged)
    assert TOKEN not in text and "wrong-token" not in text
