"""``/api/v1/certificates`` refusals: ACCEPTANCE items 1-9, 11, 12 through the real resource,
over both stores; nothing is stored after a refusal. Runs after the other API test modules,
so its last test re-checks every response body they collected for key material."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import fill_database
from tests.test_certs_api_harness import (
    BODIES,
    SECRETS,
    Api,
    assert_no_secret,
    error,
)
from tests.test_certs_helpers import NOW, Pair, build_leaf, key_pem, pem, trustme_pair

pytest_plugins = ["tests.test_certs_api_harness"]

BAD_CERTS = {
    "bad base64": "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
    "no END": "-----BEGIN CERTIFICATE-----\nMIIB\n",
    "garbage": "not a certificate",
}


@pytest.mark.parametrize("case", sorted(BAD_CERTS))
def test_malformed_certificate_is_400_naming_the_field(api: Api, ca: trustme.CA, case: str) -> None:
    pair = trustme_pair(ca, "app.example.com")
    code, body = api.call(
        "POST", "/api/v1/certificates", {"cert_pem": BAD_CERTS[case], "key_pem": pair.key_pem}
    )
    assert code == 400 and error(body)["field"] == "cert_pem"
    assert error(body)["code"] == "invalid_pem"
    assert api.count() == 0


def test_der_and_two_keys_are_refused(api: Api, ca: trustme.CA) -> None:
    pair = trustme_pair(ca, "app.example.com")
    der = base64.b64decode("".join(pair.chain[0].splitlines()[1:-1]))
    code, body = api.call(
        "POST", "/api/v1/certificates", {"cert_pem": der.decode("latin-1"), "key_pem": pair.key_pem}
    )
    assert code == 400 and error(body)["field"] == "cert_pem"
    code, body = api.call(
        "POST", "/api/v1/certificates", {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem * 2}
    )
    assert code == 400 and error(body)["field"] == "key_pem"
    assert api.count() == 0


def test_key_mismatch_leaves_stored_pair_untouched(api: Api, ca: trustme.CA) -> None:
    pair = trustme_pair(ca, "app.example.com")
    created = api.upload(pair)
    other = trustme_pair(ca, "app.example.com", rsa_key=True)
    for wrong_key in (other.key_pem, key_pem(ec.generate_private_key(ec.SECP256R1()))):
        code, body = api.call(
            "PUT",
            f"/api/v1/certificates/{created['id']}",
            {"cert_pem": pair.cert_pem, "key_pem": wrong_key},
        )
        assert code == 400 and error(body) == {
            "code": "key_mismatch",
            "field": "key_pem",
            "message": "the private key does not match the certificate in cert_pem",
        }
    code, shown = api.call("GET", f"/api/v1/certificates/{created['id']}")
    assert shown["fingerprint_sha256"] == created["fingerprint_sha256"]
    served = api.registry.by_id(created["id"])
    assert served is not None and pem(served.leaf) == pair.chain[0]


def test_encrypted_key_needs_a_passphrase(api: Api) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, locked = pem(build_leaf(key)), key_pem(key, b"open sesame")
    code, body = api.call("POST", "/api/v1/certificates", {"cert_pem": cert, "key_pem": locked})
    assert code == 400 and error(body)["code"] == "passphrase_required"
    assert "passphrase" in error(body)["message"]
    code, body = api.call(
        "POST",
        "/api/v1/certificates",
        {"cert_pem": cert, "key_pem": locked, "key_passphrase": "nope"},
    )
    assert code == 400 and error(body)["code"] == "wrong_passphrase"
    assert api.count() == 0
    code, body = api.call(
        "POST",
        "/api/v1/certificates",
        {"cert_pem": cert, "key_pem": locked, "key_passphrase": "open sesame"},
    )
    assert code == 201 and body["chain_complete"] is True  # self-signed


def test_chain_order_missing_and_unrelated(api: Api) -> None:
    root = trustme.CA()
    pair = trustme_pair(root.create_child_ca(), "app.example.com")
    messy = Pair(pair.chain[1] + pair.chain[0] + pair.chain[1], pair.key_pem, pair.chain)
    created = api.upload(messy)
    assert created["chain_complete"] is False
    code, shown = api.call("GET", f"/api/v1/certificates/{created['id']}")
    assert shown["chain_pem"] == pair.chain[0] + pair.chain[1]
    unrelated = Pair(
        pair.cert_pem + trustme.CA().cert_pem.bytes().decode(), pair.key_pem, pair.chain
    )
    code, body = api.call(
        "POST",
        "/api/v1/certificates",
        {"cert_pem": unrelated.cert_pem, "key_pem": unrelated.key_pem},
    )
    assert code == 400 and error(body)["code"] == "chain_unrelated"


def test_expired_no_san_and_names(api: Api) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "expired": build_leaf(
            key, not_before=NOW - timedelta(days=9), not_after=NOW - timedelta(days=1)
        ),
        "not_yet_valid": build_leaf(key, not_before=NOW + timedelta(days=1)),
        "no_san": build_leaf(key, san=False),
    }
    for code_name, cert in cases.items():
        code, body = api.call(
            "POST", "/api/v1/certificates", {"cert_pem": pem(cert), "key_pem": key_pem(key)}
        )
        assert code == 400 and error(body)["code"] == code_name
    assert api.count() == 0


@pytest.mark.parametrize(
    "bad",
    [
        "*.com",
        "a*.example.com",
        "a.com;touch /tmp/x",
        "$(id)",
        "app.example.com\nX: 1",
        "*.*.example.com",
    ],
)
def test_strict_hostname_grammar_on_domains(api: Api, ca: trustme.CA, bad: str) -> None:
    pair = trustme_pair(ca, "app.example.com")
    code, body = api.call(
        "POST",
        "/api/v1/certificates",
        {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem, "domains": [bad]},
    )
    assert code == 400 and error(body)["code"] == "invalid_hostname"
    assert error(body)["field"] == "domains"
    assert api.count() == 0


def test_idn_and_wildcard_matching(api: Api) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(key, ["xn--bcher-kva.example", "*.xn--bcher-kva.example"])
    created = api.upload(Pair(pem(cert), key_pem(key), ()), domains=["BÜCHER.example."])
    assert created["domains"] == ["xn--bcher-kva.example", "*.xn--bcher-kva.example"]
    assert api.registry.lookup("shop.xn--bcher-kva.example") is not None
    assert api.registry.lookup("a.shop.xn--bcher-kva.example") is None
    code, body = api.call(
        "POST",
        "/api/v1/certificates",
        {"cert_pem": pem(cert), "key_pem": key_pem(key), "domains": ["a.b.xn--bcher-kva.example"]},
    )
    assert code == 400 and error(body)["code"] == "domains_not_covered"


def test_bad_json_shapes(api: Api, ca: trustme.CA) -> None:
    pair = trustme_pair(ca, "app.example.com")
    good = {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem}
    for body in (
        {**good, "cert_pem": 5},
        {**good, "domains": "app.example.com"},
        {**good, "domains": [1]},
        {**good, "extra": True},
        {"cert_pem": pair.cert_pem},
        {**good, "domains": ["app\x00.example.com"]},
    ):
        code, answer = api.call("POST", "/api/v1/certificates", body)
        assert code == 400, answer
    code, _ = api.call("POST", "/api/v1/certificates", raw=b'{"cert_pem": "\xff"}')
    assert code == 400
    code, _ = api.call("POST", "/api/v1/certificates", raw=b"[" * 100 + b"]" * 100)
    assert code == 400
    assert api.count() == 0


def test_zz_no_response_ever_contained_key_material() -> None:
    """Runs last in this module: every body the API returned above, checked again."""
    assert len(BODIES) > 50 and len(SECRETS) > 10
    for payload in BODIES:
        assert_no_secret(payload)


def test_full_disk_on_upload_and_replace_is_507_and_the_old_pair_serves(
    api: Api, ca: trustme.CA
) -> None:
    """ACCEPTANCE 34: a full disk during an upload or a replacement (renewal) → a clear
    error; the previous pair is intact and still served."""
    if api.path is None:
        pytest.skip("the memory store has no disk")
    pair = trustme_pair(ca, "app.example.com")
    created = api.upload(pair)
    fill_database(api.store, to_the_brim=True)
    # larger than the stored P-256 pair: an RSA leaf under three intermediates
    deep = ca.create_child_ca().create_child_ca().create_child_ca()
    renewed = trustme_pair(deep, "app.example.com", rsa_key=True)
    for method, path in (("POST", "/api/v1/certificates"),
                         ("PUT", f"/api/v1/certificates/{created['id']}")):
        code, body = api.call(method, path,
                              {"cert_pem": renewed.cert_pem, "key_pem": renewed.key_pem})
        assert code == 507, body
        assert error(body) == {
            "code": "storage_full", "field": None,
            "message": "the disk holding the database is full; nothing was changed",
        }
    code, listed = api.call("GET", "/api/v1/certificates")
    assert [c["id"] for c in listed] == [created["id"]]
    code, shown = api.call("GET", f"/api/v1/certificates/{created['id']}")
    assert shown["fingerprint_sha256"] == created["fingerprint_sha256"]
    served = api.registry.by_id(created["id"])
    assert served is not None and pem(served.leaf) == pair.chain[0]
