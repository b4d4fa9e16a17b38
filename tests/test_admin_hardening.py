"""Admin API faults of issue 17 through the real resource and Site, in memory: huge path
ids (5), a token in the query string (6), two Host headers (7), and the OpenAPI document
(10)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from twisted.logger import LogEvent, formatEvent

from aegis.admin import AdminAPI
from aegis.admin._routing import MAX_ROW_ID
from aegis.store._runner import immediate_runner
from aegis.store.sqlite import SQLiteStore
from tests.test_admin_api import TOKEN, Client, error_of, logged, make_api
from tests.test_admin_channel import connect
from tests.test_admin_limits import status_and_body


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "admin-hardening-ca"


__all__ = ["logged"]  # a fixture, imported for these tests


@pytest.fixture
def sqlite_client(cache: Path, tmp_path: Path) -> Iterator[Client]:
    store = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    yield Client(make_api(cache, store=store))  # type: ignore[arg-type]
    store.close()


@pytest.mark.parametrize("path", ["/api/v1/certificates/{}", "/api/v1/hosts/{}"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("number", [MAX_ROW_ID + 1, 2**64, 10**40])
def test_fault_5_ids_past_sqlite_range_are_404_not_500(
    sqlite_client: Client, path: str, method: str, number: int
) -> None:
    response, body = sqlite_client.call(method, path.format(number))
    assert response.code == 404, body
    assert error_of(body)["code"] == "not_found"


def test_fault_5_the_largest_row_id_is_an_ordinary_404(sqlite_client: Client) -> None:
    response, body = sqlite_client.call("GET", f"/api/v1/hosts/{MAX_ROW_ID}")
    assert response.code == 404 and error_of(body)["code"] == "not_found"


def test_fault_6_a_token_in_the_query_string_is_not_logged(
    cache: Path, logged: list[LogEvent]
) -> None:
    protocol, transport, _ = connect(cache)
    protocol.factory.doStart()
    try:
        protocol.dataReceived(
            f"GET /api/v1/certificates?token={TOKEN}&access_token={TOKEN} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:9443\r\nReferer: https://x.example/?t={TOKEN}\r\n\r\n".encode()
        )
    finally:
        protocol.factory.doStop()
    assert b" 401 " in transport.value().split(b"\r\n", 1)[0] + b" "
    text = "\n".join(formatEvent(event) for event in logged)
    assert "/api/v1/certificates?<redacted>" in text  # the request is still logged
    assert TOKEN not in text


def test_fault_7_two_host_headers_are_400(cache: Path) -> None:
    protocol, transport, _ = connect(cache)
    protocol.dataReceived(
        f"GET /api/v1/openapi.json HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1:9443\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    code, payload = status_and_body(transport.value())
    assert code == 400
    assert json.loads(payload)["error"] == {
        "code": "duplicate_host", "field": "Host",
        "message": "the request carries more than one Host header"}


def document(cache: Path) -> dict[str, Any]:
    response, body = Client(make_api(cache, AdminAPI)).call("GET", "/api/v1/openapi.json")
    assert response.code == 200
    result: dict[str, Any] = json.loads(body)
    validate(result)
    return result


def test_fault_10_edge_pack_get_documents_zone_id_and_the_cloudflare_token(cache: Path) -> None:
    operation = document(cache)["paths"]["/api/v1/certificates/cloudflare-edge/{pack_id}"]["get"]
    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    assert parameters[("query", "zone_id")]["required"] is True
    assert parameters[("header", "X-Cloudflare-Token")]["required"] is True


def test_fault_10_empty_domains_and_non_pem_strings_are_outside_the_document(
    cache: Path,
) -> None:
    paths = document(cache)["paths"]
    upload = paths["/api/v1/certificates"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    host = paths["/api/v1/hosts"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    assert host["domain"]["minLength"] == 1 and host["aliases"]["items"]["minLength"] == 1
    assert upload["domains"]["items"]["minLength"] == 1
    assert host["ssl_cert_pem"]["minLength"] == host["ssl_key_pem"]["minLength"] == 1
    assert upload["cert_pem"]["pattern"] == "-----BEGIN CERTIFICATE-----"
    assert re.search(upload["key_pem"]["pattern"], "-----BEGIN EC PRIVATE KEY-----")
    assert not re.search(upload["key_pem"]["pattern"], "-----BEGIN CERTIFICATE-----")


def test_fault_10_integer_path_ids_are_bounded_in_the_document(cache: Path) -> None:
    item = document(cache)["paths"]["/api/v1/certificates/{cert_id}"]["get"]
    assert item["parameters"][0]["schema"] == {"type": "integer", "minimum": 0,
                                                "maximum": MAX_ROW_ID}
    assert "404" in item["responses"]


def test_the_server_refuses_what_the_document_excludes(cache: Path) -> None:
    client = Client(make_api(cache, AdminAPI))
    for body, field in (({"domain": "", "upstream": "http://127.0.0.1:1"}, "domain"),
                        ({"cert_pem": "x", "key_pem": "-----BEGIN PRIVATE KEY-----"},
                         "cert_pem")):
        path = "/api/v1/hosts" if "domain" in body else "/api/v1/certificates"
        response, raw = client.call("POST", path, data=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"})
        assert response.code == 400 and error_of(raw)["field"] == field


@pytest.mark.parametrize("request_line", [
    b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: .127.0.0.1:9443",  # werkzeug's BadHost
    b"G\xc3\x28T /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1:9443",  # non-UTF-8 method
    b"GET /api/v1/%81x HTTP/1.1\r\nHost: 127.0.0.1:9443",  # non-UTF-8 path
])
def test_what_klein_cannot_route_is_a_4xx_not_a_500_or_a_traceback(
    cache: Path, logged: list[LogEvent], request_line: bytes
) -> None:
    """Found by fuzz/fuzz_admin_channel.py (atheris): each was a 500 or a logged traceback."""
    protocol, transport, _ = connect(cache)
    protocol.dataReceived(request_line + b"\r\n\r\n")
    code, payload = status_and_body(transport.value())
    assert code in (400, 403)
    assert json.loads(payload)["error"]["code"] in ("bad_request", "forbidden_host")
    assert not [event for event in logged if event.get("log_failure") is not None]
