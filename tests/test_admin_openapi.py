"""The OpenAPI document matches Klein's route table; the trust bundle; strict JSON."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from openapi_spec_validator import validate

from aegis.admin import AdminAPI, ApiError, Field, ObjectSchema, parse_json_body, trust_bundle
from aegis.admin._routing import OUTSIDE_API, klein_to_openapi_path
from aegis.localca import CA_CERT_FILE
from tests.test_admin_api import Client, PipelineAPI, authority, make_api

SPEC_COMMANDS = [
    "sudo security add-trusted-cert -d -r trustRoot",
    "-k /Library/Keychains/System.keychain aegis-local-ca.crt",
    'certutil -addstore -f "Root" aegis-local-ca.crt',
    "sudo cp aegis-local-ca.crt /usr/local/share/ca-certificates/aegis-local-ca.crt",
    "sudo update-ca-certificates",
    "sudo cp aegis-local-ca.crt /etc/pki/ca-trust/source/anchors/aegis-local-ca.crt",
    "sudo update-ca-trust",
    "Open Settings -> Privacy & Security -> Certificates -> View Certificates",
    "Import aegis-local-ca.crt under the Authorities tab",
    "Trust this CA to identify websites",
]


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "admin-openapi-ca"


def klein_routes(cls: type[AdminAPI]) -> set[tuple[str, str]]:
    """Every API route Klein serves (the web UI's static files are not API routes)."""
    routes = set()
    for rule in cls.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") and rule.rule not in OUTSIDE_API:
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method.lower(), klein_to_openapi_path(rule.rule)))
    return routes


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


@pytest.mark.parametrize("cls", [AdminAPI, PipelineAPI])
def test_openapi_document_equals_the_klein_route_table(cache: Path, cls: type[AdminAPI]) -> None:
    response, body = Client(make_api(cache, cls)).call("GET", "/api/v1/openapi.json")
    assert response.code == 200
    document = json.loads(body)
    validate(document)
    assert documented(document) == klein_routes(cls)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for op in cls.operations:
        entry = document["paths"][op.openapi_path][op.method.lower()]
        assert (entry["security"] == []) == op.public
        # a public route documents 401 only for what it withholds without a token
        assert ("401" in entry["responses"]) == (not op.public or 401 in op.responses)


def test_request_bodies_are_documented_from_their_schema(cache: Path) -> None:
    _, body = Client(make_api(cache, PipelineAPI)).call("GET", "/api/v1/openapi.json")
    echo = json.loads(body)["paths"]["/api/v1/test/echo"]["post"]
    schema = echo["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["name"]
    item = json.loads(body)["paths"]["/api/v1/test/certificates/{cert_id}"]["get"]
    assert item["parameters"] == [
        {"name": "cert_id", "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}
    ]


def test_trust_bundle_holds_exactly_the_ca_and_readme(cache: Path, tmp_path: Path) -> None:
    response, body = Client(make_api(cache)).call(
        "GET", "/api/v1/settings/admin-trust-bundle", token=None
    )
    assert response.code == 200
    assert response.headers.getRawHeaders("Content-Type") == ["application/zip"]
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert sorted(archive.namelist()) == ["README.txt", CA_CERT_FILE]
    ca_pem = archive.read(CA_CERT_FILE)
    assert ca_pem == (cache / CA_CERT_FILE).read_bytes() == authority(cache).ca_pem
    assert x509.load_pem_x509_certificate(ca_pem) == authority(cache).ca_cert
    assert b"PRIVATE" not in body
    readme = archive.read("README.txt").decode()
    for command in SPEC_COMMANDS:
        assert command in readme, command
    for platform in ("macOS", "Windows", "Debian/Ubuntu", "RHEL/Fedora", "Firefox"):
        assert platform in readme
    if shutil.which("unzip"):
        (tmp_path / "bundle.zip").write_bytes(body)
        listing = subprocess.run(
            ["unzip", "-l", str(tmp_path / "bundle.zip")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "2 files" in listing


def test_trust_bundle_is_deterministic(cache: Path) -> None:
    pem = authority(cache).ca_pem
    assert trust_bundle(pem) == trust_bundle(pem)


# --- strict JSON parsing (unit) ------------------------------------------------------------

SCHEMA = ObjectSchema(
    {
        "name": Field("string", required=True),
        "count": Field("integer"),
        "ratio": Field("number", nullable=True),
        "mode": Field("string", enum=("a", "b")),
        "tags": Field("array", items=Field("string"), max_length=3),
        "upstream": Field("object", schema=ObjectSchema({"url": Field("string", required=True)})),
    }
)


def refused(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json_body(raw, SCHEMA)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b'{"name": "a", "count": true}', "wrong_type", "count"),
        (b'{"name": "a", "count": 1.5}', "wrong_type", "count"),
        (b'{"name": "a", "mode": "c"}', "invalid_choice", "mode"),
        (b'{"name": "a", "tags": ["x", 2]}', "wrong_type", "tags[1]"),
        (b'{"name": "a", "tags": ["1", "2", "3", "4"]}', "too_long", "tags"),
        (b'{"name": "a", "upstream": {"url": "x", "extra": 1}}', "unknown_field", "upstream.extra"),
        (b'{"name": "a", "upstream": {}}', "missing_field", "upstream.url"),
        (b'{"name": "a", "name": "b"}', "duplicate_field", "name"),
        (b'{"name": NaN}', "invalid_json", None),
        (b'{"name": "a", "tags": ["ok\\u0000"]}', "nul_character", "tags[0]"),
        (b'{"name": null}', "wrong_type", "name"),
        (b'\xef\xbb\xbf{"name": "a"}', "invalid_json", None),
        (b'"just a string"', "invalid_json", None),
    ],
)
def test_schema_violations_name_the_field(raw: bytes, code: str, field: str | None) -> None:
    error = refused(raw)
    assert (error.code, error.field) == (code, field)


def test_enormous_nesting_is_refused_without_recursion() -> None:
    assert refused(b"[" * 100000 + b"]" * 100000).code == "too_deep"
    # Brackets inside a string are text, not nesting.
    assert parse_json_body(b'{"name": "' + b"[" * 100 + b'"}', SCHEMA) == {"name": "[" * 100}


def test_valid_body_is_returned() -> None:
    body = parse_json_body(
        b'{"name": "\xc3\xa9", "ratio": null, "upstream": {"url": "http://a"}}', SCHEMA
    )
    assert body == {"name": "\u00e9", "ratio": None, "upstream": {"url": "http://a"}}
