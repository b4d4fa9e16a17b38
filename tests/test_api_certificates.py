"""``/api/v1/certificates``: upload, list, show, replace, delete through the real resource;
auth on every route; the certificate object; no plaintext key in the SQLite file. Refusals of
bad input are in tests/test_certs_api_refusals.py."""

from __future__ import annotations

from dataclasses import replace as dc_replace
from datetime import timedelta
from pathlib import Path

import trustme
from cryptography.hazmat.primitives.asymmetric import ec

from aegis.admin._certificates import routes
from aegis.localca import LocalAuthority
from aegis.store._runner import immediate_runner
from aegis.store.sqlite import SQLiteStore
from tests.helpers import host_fields
from tests.test_certs_api_harness import (
    EXTRA_FIELDS,
    SPEC_FIELDS,
    Api,
    error,
    private_bytes,
)
from tests.test_certs_helpers import NOW, Pair, build_leaf, key_pem, pem, trustme_pair

pytest_plugins = ["tests.test_certs_api_harness"]


def test_upload_list_show_replace_delete(api: Api, ca: trustme.CA) -> None:
    pair = trustme_pair(ca, "app.example.com", "*.example.com")
    created = api.upload(pair, domains=["app.example.com"])
    assert set(created) == SPEC_FIELDS | EXTRA_FIELDS
    assert created["domains"] == ["app.example.com", "*.example.com"]
    assert created["source"] == "custom" and created["auto_renew"] is False
    assert created["expires_at"].endswith("Z") and created["created_at"].endswith("Z")
    assert created["status"] == "valid" and created["days_remaining"] >= 89
    assert created["key_type"] == "ecdsa-p256" and created["hosts"] == []
    cert_id = created["id"]
    assert isinstance(cert_id, int)
    found = api.registry.lookup("www.example.com")
    assert found is not None and found.id == cert_id

    code, listed = api.call("GET", "/api/v1/certificates")
    assert code == 200 and [c["id"] for c in listed] == [cert_id]
    assert "chain_pem" not in listed[0]

    code, shown = api.call("GET", f"/api/v1/certificates/{cert_id}")
    assert code == 200 and shown["chain_pem"] == pair.chain[0]
    assert set(shown) == SPEC_FIELDS | EXTRA_FIELDS | {"chain_pem"}

    api.store.transact_blocking(
        lambda t: t.add_host(host_fields("app.example.com", ssl_mode="custom", ssl_cert_id=cert_id))
    )
    renewed = trustme_pair(ca, "*.example.com", "app.example.com")
    code, replaced = api.call(
        "PUT",
        f"/api/v1/certificates/{cert_id}",
        {"cert_pem": renewed.cert_pem, "key_pem": renewed.key_pem},
    )
    assert code == 200, replaced
    assert replaced["id"] == cert_id and replaced["created_at"] == created["created_at"]
    assert replaced["fingerprint_sha256"] != created["fingerprint_sha256"]
    assert replaced["hosts"] == [
        {"id": 1, "domain": "app.example.com", "names": ["app.example.com"],
         "step": "host_binding"}
    ]
    served = api.registry.by_id(cert_id)
    assert served is not None and pem(served.leaf) == renewed.chain[0]

    code, body = api.call("DELETE", f"/api/v1/certificates/{cert_id}")
    assert code == 409
    assert error(body)["code"] == "certificate_in_use"
    assert "app.example.com (host 1)" in error(body)["message"]
    api.store.transact_blocking(lambda t: t.delete_host(1))
    code, body = api.call("DELETE", f"/api/v1/certificates/{cert_id}")
    assert code == 204 and body is None
    assert api.registry.by_id(cert_id) is None
    code, body = api.call("GET", f"/api/v1/certificates/{cert_id}")
    assert code == 404 and error(body)["code"] == "not_found"
    code, body = api.call("DELETE", f"/api/v1/certificates/{cert_id}")
    assert code == 404


def test_every_route_needs_the_token(api: Api) -> None:
    for operation in routes.operations:
        path = operation.path.replace("<int:cert_id>", "1")
        for token in (None, "wrong-token"):
            code, _ = api.call(operation.method, path, {} if operation.body else None, token=token)
            assert code == 401, (operation.method, path)


def test_replace_rules(api: Api, ca: trustme.CA) -> None:
    created = api.upload(trustme_pair(ca, "app.example.com"))
    other = trustme_pair(ca, "app.example.com", "api.example.com")
    code, body = api.call(
        "PUT",
        f"/api/v1/certificates/{created['id']}",
        {"cert_pem": other.cert_pem, "key_pem": other.key_pem},
    )
    assert code == 400 and error(body)["code"] == "names_changed"
    assert "adds api.example.com" in error(body)["message"]
    code, body = api.call(
        "PUT", "/api/v1/certificates/999", {"cert_pem": other.cert_pem, "key_pem": other.key_pem}
    )
    assert code == 404

    record = api.store.transact_blocking(lambda t: t.get_certificate(created["id"]))
    acme = dc_replace(record.fields(), uid=record.uid + "x", source="letsencrypt")
    acme_id = api.store.transact_blocking(lambda t: t.add_certificate(acme)).id
    same = trustme_pair(ca, "app.example.com")
    code, body = api.call(
        "PUT",
        f"/api/v1/certificates/{acme_id}",
        {"cert_pem": same.cert_pem, "key_pem": same.key_pem},
    )
    assert code == 409 and error(body)["code"] == "not_replaceable"


def test_status_expiring_and_flagged_problem(api: Api) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    soon = build_leaf(key, not_after=NOW + timedelta(days=10, hours=1))
    created = api.upload(Pair(pem(soon), key_pem(key), ()))
    assert created["status"] == "expiring" and created["days_remaining"] == 10
    api.clock.advance(timedelta(days=11).total_seconds())
    code, shown = api.call("GET", f"/api/v1/certificates/{created['id']}")
    assert shown["status"] == "expired" and shown["days_remaining"] == 0
    assert shown["problem"] is None

    record = api.store.transact_blocking(lambda t: t.get_certificate(created["id"]))
    broken = bytearray(record.key_sealed)
    broken[-1] ^= 0xFF
    api.store.transact_blocking(
        lambda t: t.replace_certificate(
            record.id, dc_replace(record.fields(), key_sealed=bytes(broken))
        )
    )
    api.registry.load_blocking()
    code, shown = api.call("GET", f"/api/v1/certificates/{created['id']}")
    assert code == 200 and shown["problem"]["code"] == "key_unreadable"


def test_sqlite_file_holds_no_plaintext_key(
    tmp_path: Path, authority: LocalAuthority, ca: trustme.CA
) -> None:
    path = tmp_path / "aegis.db"
    store = SQLiteStore.open(path, immediate_runner)
    api = Api(store, authority, path)
    pairs = [trustme_pair(ca, f"h{i}.example.com", rsa_key=i == 0) for i in range(3)]
    for pair in pairs:
        api.upload(pair)
    files = [p for p in path.parent.iterdir() if p.name.startswith("aegis.db")]
    data = b"".join(p.read_bytes() for p in files)
    assert b"PRIVATE KEY" not in data
    for pair in pairs:
        body = "".join(pair.key_pem.splitlines()[1:-1])
        assert body[48:96].encode() not in data
        assert private_bytes(pair.key_pem) not in data
    store.close()


def test_openapi_document_of_these_routes_is_valid(api: Api) -> None:
    from openapi_spec_validator import validate

    code, document = api.call("GET", "/api/v1/openapi.json")
    assert code == 200
    validate(document)
    paths = document["paths"]
    assert set(paths["/api/v1/certificates"]) == {"get", "post"}
    assert set(paths["/api/v1/certificates/{cert_id}"]) == {"get", "put", "delete"}
