"""Upload validation: ACCEPTANCE items 1-7 (and 8, 9 for requested domains) at the pure level."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from hypothesis import given
from hypothesis import strategies as st

from aegis.certs.errors import CertificateError
from aegis.certs.pem import parse_certificates, parse_private_key
from aegis.certs.validate import validate_upload
from aegis.crypto.keys import load_private_key_pem
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.crypto.sealed import certificate_key_context
from tests.test_certs_helpers import (
    NOW,
    Pair,
    build_leaf,
    ca_key_and_cert,
    key_pem,
    pem,
    rsa_key,
    trustme_pair,
)


@pytest.fixture(scope="module")
def root() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def intermediate(root: trustme.CA) -> trustme.CA:
    return root.create_child_ca()


@pytest.fixture(scope="module")
def chained(intermediate: trustme.CA) -> Pair:
    return trustme_pair(intermediate, "app.example.com", "*.example.com")


def root_cert(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def refused(code: str, field: str | None, **kwargs: object) -> CertificateError:
    kwargs.setdefault("now", NOW)
    with pytest.raises(CertificateError) as caught:
        validate_upload(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code, caught.value.message
    assert caught.value.field == field
    assert "PRIVATE KEY" not in caught.value.message
    return caught.value


def test_valid_chain_with_trusted_root(root: trustme.CA, chained: Pair) -> None:
    result = validate_upload(
        chained.cert_pem, chained.key_pem, now=NOW, trust_roots=[root_cert(root)]
    )
    assert result.names == ("app.example.com", "*.example.com")
    assert result.chain_complete is True
    assert len(result.chain) == 2
    assert result.key_type == "ecdsa-p256"
    assert "Testing CA" in result.issuer  # trustme CAs have no CN: the DN is shown
    assert len(result.fingerprint_sha256) == 64
    assert result.not_before <= NOW < result.not_after
    assert "key" not in repr(result).replace("key_type", "")


def test_out_of_order_and_duplicated_chain_is_stored_leaf_first(
    root: trustme.CA, chained: Pair, tmp_path: Path
) -> None:
    leaf_pem, inter_pem = chained.chain
    messy = inter_pem + "junk text between blocks\n" + leaf_pem + inter_pem + leaf_pem
    result = validate_upload(messy, chained.key_pem, now=NOW)
    assert result.chain_pem == leaf_pem + inter_pem
    assert result.chain_complete is False  # the root is not in the bundle nor trusted

    # The served chain verifies with openssl (ACCEPTANCE 4).
    (tmp_path / "root.pem").write_bytes(root.cert_pem.bytes())
    (tmp_path / "leaf.pem").write_text(leaf_pem)
    (tmp_path / "rest.pem").write_text(result.chain_pem.removeprefix(leaf_pem))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "rest.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_bundle_ending_at_self_signed_root_is_complete(root: trustme.CA, chained: Pair) -> None:
    bundle = root.cert_pem.bytes().decode() + chained.cert_pem
    result = validate_upload(bundle, chained.key_pem, now=NOW)
    assert result.chain_complete is True
    assert [c.subject for c in result.chain][-1] == root_cert(root).subject


def test_missing_intermediate_is_accepted_and_flagged(root: trustme.CA, chained: Pair) -> None:
    result = validate_upload(
        chained.chain[0], chained.key_pem, now=NOW, trust_roots=[root_cert(root)]
    )
    assert result.chain_complete is False
    assert len(result.chain) == 1


def test_unrelated_intermediate_is_refused(chained: Pair) -> None:
    other = trustme.CA().create_child_ca().cert_pem.bytes().decode()
    error = refused(
        "chain_unrelated", "cert_pem", cert_pem=chained.cert_pem + other, key_pem=chained.key_pem
    )
    assert "Testing CA" in error.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-----BEGIN CERTIFICATE-----\nMII@@@notbase64\n-----END CERTIFICATE-----\n", "base64"),
        ("-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n", "END"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid X.509"),
        ("hello world", "no PEM block"),
        ("", "no PEM block"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n", "END"),
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a CERTIFICATE"),
    ],
)
def test_malformed_certificate_pem(chained: Pair, text: str, needle: str) -> None:
    error = refused("invalid_pem", "cert_pem", cert_pem=text, key_pem=chained.key_pem)
    assert needle in error.message


def test_der_bytes_are_refused(chained: Pair) -> None:
    der = x509.load_pem_x509_certificate(chained.chain[0].encode()).public_bytes(
        serialization.Encoding.DER
    )
    error = refused(
        "invalid_pem", "cert_pem", cert_pem=der.decode("latin-1"), key_pem=chained.key_pem
    )
    assert "DER" in error.message


def test_private_key_pasted_as_certificate_is_refused_without_echo(chained: Pair) -> None:
    error = refused("invalid_pem", "cert_pem", cert_pem=chained.key_pem, key_pem=chained.key_pem)
    body = "".join(chained.key_pem.splitlines()[1:-1])
    assert body[:20] not in error.message and "key_pem" in error.message


def test_wrong_types_name_the_field(chained: Pair) -> None:
    refused("invalid_field", "cert_pem", cert_pem=42, key_pem=chained.key_pem)
    refused("invalid_field", "key_pem", cert_pem=chained.cert_pem, key_pem=["x"])
    refused(
        "invalid_field",
        "domains",
        cert_pem=chained.cert_pem,
        key_pem=chained.key_pem,
        domains="app.example.com",
    )
    refused(
        "invalid_field",
        "key_passphrase",
        cert_pem=chained.cert_pem,
        key_pem=chained.key_pem,
        key_passphrase=123,
    )


def test_two_keys_are_refused(chained: Pair) -> None:
    error = refused(
        "invalid_pem", "key_pem", cert_pem=chained.cert_pem, key_pem=chained.key_pem * 2
    )
    assert "2 private keys" in error.message


def test_certificate_in_key_field_is_refused(chained: Pair) -> None:
    refused(
        "invalid_pem",
        "key_pem",
        cert_pem=chained.cert_pem,
        key_pem=chained.key_pem + chained.chain[0],
    )
    refused("invalid_pem", "key_pem", cert_pem=chained.cert_pem, key_pem=chained.chain[0])


def test_key_with_bad_base64_is_refused(chained: Pair) -> None:
    lines = chained.key_pem.splitlines()
    broken = "\n".join([lines[0], "!!!" + lines[1][3:], *lines[2:]])
    refused("invalid_pem", "key_pem", cert_pem=chained.cert_pem, key_pem=broken)


def test_key_mismatch_other_ecdsa_key(chained: Pair) -> None:
    other = key_pem(ec.generate_private_key(ec.SECP256R1()))
    refused("key_mismatch", "key_pem", cert_pem=chained.cert_pem, key_pem=other)


def test_key_mismatch_rsa_key_with_ecdsa_certificate(chained: Pair) -> None:
    refused("key_mismatch", "key_pem", cert_pem=chained.cert_pem, key_pem=key_pem(rsa_key()))


@pytest.mark.parametrize("kind", ["rsa", "ecdsa-p384", "ed25519"])
def test_supported_key_types_match(kind: str) -> None:
    key: CertificateIssuerPrivateKeyTypes
    if kind == "rsa":
        key = rsa_key()
    elif kind == "ecdsa-p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    ca = ca_key_and_cert()
    cert = build_leaf(key, issuer=ca)
    result = validate_upload(pem(cert), key_pem(key), now=NOW, trust_roots=[ca[1]])
    assert result.key_type == {"rsa": "rsa-2048", "ecdsa-p384": "ecdsa-p384"}.get(kind, kind)
    assert result.chain_complete is True


def test_trustme_rsa_pair(root: trustme.CA) -> None:
    pair = trustme_pair(root, "rsa.example.com", rsa_key=True)
    assert validate_upload(pair.cert_pem, pair.key_pem, now=NOW).key_type == "rsa-2048"


def test_weak_rsa_key_is_refused() -> None:
    key = rsa_key(1024)
    refused("weak_key", "key_pem", cert_pem=pem(build_leaf(key)), key_pem=key_pem(key))


@pytest.mark.parametrize("legacy", [False, True])
def test_encrypted_key_needs_the_passphrase(legacy: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert, locked = pem(build_leaf(key)), key_pem(key, b"s3cret", legacy=legacy)
    error = refused("passphrase_required", "key_passphrase", cert_pem=cert, key_pem=locked)
    assert "passphrase" in error.message
    refused(
        "passphrase_required", "key_passphrase", cert_pem=cert, key_pem=locked, key_passphrase=""
    )
    error = refused(
        "wrong_passphrase", "key_passphrase", cert_pem=cert, key_pem=locked, key_passphrase="wrong"
    )
    assert "wrong" not in error.message and "s3cret" not in error.message
    result = validate_upload(cert, locked, now=NOW, key_passphrase="s3cret")
    assert result.names == ("app.example.com",)


def test_passphrase_for_plain_key_is_ignored(chained: Pair) -> None:
    validate_upload(chained.cert_pem, chained.key_pem, now=NOW, key_passphrase="unused")


def test_certificate_without_san_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    error = refused(
        "no_san", "cert_pem", cert_pem=pem(build_leaf(key, san=False)), key_pem=key_pem(key)
    )
    assert "Subject Alternative Name" in error.message


def test_certificate_with_only_unusable_sans_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(key, ["bad_name.example.com", "*.com"], common_name="x")
    refused("no_san", "cert_pem", cert_pem=pem(cert), key_pem=key_pem(key))


def test_expired_and_not_yet_valid_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    old = build_leaf(key, not_before=NOW - timedelta(days=100), not_after=NOW - timedelta(days=1))
    error = refused("expired", "cert_pem", cert_pem=pem(old), key_pem=key_pem(key))
    assert "expired at" in error.message and error.message.endswith("Z")
    future = build_leaf(key, not_before=NOW + timedelta(days=1))
    refused("not_yet_valid", "cert_pem", cert_pem=pem(future), key_pem=key_pem(key))


def test_requested_domains_must_be_covered(chained: Pair) -> None:
    ok = validate_upload(
        chained.cert_pem,
        chained.key_pem,
        now=NOW,
        domains=["APP.example.com.", "api.example.com", "*.example.com"],
    )
    assert ok.names == ("app.example.com", "*.example.com")
    error = refused(
        "domains_not_covered",
        "domains",
        cert_pem=chained.cert_pem,
        key_pem=chained.key_pem,
        domains=["example.com", "a.b.example.com"],
    )
    assert "example.com, a.b.example.com" in error.message


@pytest.mark.parametrize(
    "bad", ["a.com;touch /tmp/x", "$(id)", "a.com\nb.com", "*.com", "a*.example.com"]
)
def test_requested_domains_use_the_strict_grammar(chained: Pair, bad: str) -> None:
    error = refused(
        "invalid_hostname",
        "domains",
        cert_pem=chained.cert_pem,
        key_pem=chained.key_pem,
        domains=[bad],
    )
    assert "\n" not in error.message


def test_idn_names_are_a_labels() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(key, ["xn--bcher-kva.example"])
    result = validate_upload(pem(cert), key_pem(key), now=NOW, domains=["bücher.example"])
    assert result.names == ("xn--bcher-kva.example",)


def test_to_fields_seals_the_key(chained: Pair) -> None:
    wrapper = KeyWrapper(MasterKey.generate())
    result = validate_upload(chained.cert_pem, chained.key_pem, now=NOW)
    fields = result.to_fields(wrapper)
    assert fields.source == "custom" and fields.domains == result.names
    assert b"PRIVATE KEY" not in fields.key_sealed
    assert "PRIVATE KEY" not in fields.chain_pem and "key_sealed" not in repr(fields)
    opened = wrapper.open(fields.key_sealed, certificate_key_context(fields.uid))
    assert load_private_key_pem(opened).public_key() == result.key.public_key()
    assert result.to_fields(wrapper).uid != fields.uid


def test_parsers_directly() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    loaded = parse_private_key(text + key_pem(key, legacy=True))
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    with pytest.raises(CertificateError):
        parse_certificates("-----BEGIN CERTIFICATE-----\n" * 20)


_DEEP: list[Pair] = []


def deep_chain() -> Pair:
    """leaf <- inter2 <- inter1 <- root, all in the bundle (built once)."""
    if not _DEEP:
        root = trustme.CA()
        leaf = trustme_pair(root.create_child_ca().create_child_ca(), "deep.example.com")
        full = (*leaf.chain, root.cert_pem.bytes().decode())
        _DEEP.append(Pair("".join(full), leaf.key_pem, full))
    return _DEEP[0]


@given(st.lists(st.integers(0, 3), min_size=4, max_size=9).filter(lambda v: set(v) == {0, 1, 2, 3}))
def test_property_any_order_and_duplicates_give_one_chain(order: list[int]) -> None:
    pair = deep_chain()
    shuffled = "".join(pair.chain[i] for i in order)
    result = validate_upload(shuffled, pair.key_pem, now=NOW)
    assert result.chain_pem == pair.cert_pem
    assert result.chain_complete is True


def test_many_unterminated_blocks_fail_fast() -> None:
    """Each BEGIN without END would make a naive pattern rescan the text: quadratic."""
    import time

    text = "-----BEGIN CERTIFICATE-----\n" * 9000
    started = time.perf_counter()
    with pytest.raises(CertificateError, match="more than 20 PEM blocks"):
        parse_certificates(text)
    assert time.perf_counter() - started < 1.0


_pem_like = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda label, body: f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n",
        st.sampled_from(
            [
                "CERTIFICATE",
                "PRIVATE KEY",
                "RSA PRIVATE KEY",
                "ENCRYPTED PRIVATE KEY",
                "EC PRIVATE KEY",
                "X",
            ]
        ),
        st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n:-,",
            max_size=300,
        ),
    ),
)


@given(_pem_like, st.one_of(st.none(), st.text(max_size=10)))
def test_property_parsers_fail_only_with_certificate_error(
    text: str, passphrase: str | None
) -> None:
    for parse in (parse_certificates, lambda t: parse_private_key(t, passphrase)):
        try:
            parse(text)
        except CertificateError as error:
            assert error.field in ("cert_pem", "key_pem", "key_passphrase")
            assert "PRIVATE KEY-----" not in error.message
