"""PEM splitting and chain ordering under hypothesis (ACCEPTANCE 1, 4)."""

from __future__ import annotations

import base64

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from aegis.certs.chain import order_chain
from aegis.certs.errors import CertificateError
from tests.fuzz.targets import pem

ROOT = trustme.CA()
MIDDLE = ROOT.create_child_ca()
LEAF = MIDDLE.issue_cert("app.example.com")
CHAIN_PEM = "".join(blob.bytes().decode() for blob in LEAF.cert_chain_pems)
KEY_PEM = LEAF.private_key_pem.bytes().decode()
CERTS = x509.load_pem_x509_certificates(CHAIN_PEM.encode())
ROOT_CERT = x509.load_pem_x509_certificate(ROOT.cert_pem.bytes())
OTHER = x509.load_pem_x509_certificate(trustme.CA().cert_pem.bytes())

labels = st.sampled_from(["CERTIFICATE", "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY",
                          "ENCRYPTED PRIVATE KEY", "X509 CRL", "EC PARAMETERS", "CERT"])


@st.composite
def pem_texts(draw: st.DrawFn) -> str:
    """Block structure with hostile parts: wrong END labels, headers, bad base64, DER."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        label = draw(labels)
        end = draw(st.one_of(st.just(label), labels))
        body = draw(st.one_of(
            st.binary(max_size=120).map(lambda b: base64.encodebytes(b).decode()),
            st.text(max_size=80),
            st.just(base64.encodebytes(CERTS[0].public_bytes(Encoding.DER)).decode())))
        header = draw(st.sampled_from(["", "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n",
                                       "X: y\n\n"]))
        parts.append(f"-----BEGIN {label}-----\n{header}{body}-----END {end}-----\n"
                     if draw(st.booleans()) else f"-----BEGIN {label}-----\n{body}")
        parts.append(draw(st.text(max_size=10)))
    return "".join(parts)


@given(pem_texts())
def test_structured_pem_is_parsed_or_refused_cleanly(text: str) -> None:
    pem(text.encode())


@given(st.binary(max_size=400))
def test_any_bytes_are_parsed_or_refused_cleanly(data: bytes) -> None:
    pem(data)


@given(st.integers(0, len(CHAIN_PEM) - 1), st.integers(0, 255))
def test_a_real_chain_with_one_byte_changed(index: int, value: int) -> None:
    text = CHAIN_PEM[:index] + chr(value) + CHAIN_PEM[index + 1:]
    pem(text.encode())
    pem((KEY_PEM[: index % len(KEY_PEM)] + chr(value) + KEY_PEM[index % len(KEY_PEM) + 1:])
        .encode())


@given(st.lists(st.sampled_from([CERTS[1], ROOT_CERT, OTHER]), max_size=6))
def test_chain_order_is_leaf_first_whatever_the_input_order(
    others: list[x509.Certificate],
) -> None:
    stray = OTHER in others or (ROOT_CERT in others and CERTS[1] not in others)
    try:
        ordered = order_chain(CERTS[0], others)
    except CertificateError as error:
        assert error.code == "chain_unrelated" and stray
        return
    assert not stray
    expected = [CERTS[0]] + [c for c in (CERTS[1], ROOT_CERT) if c in others]
    assert list(ordered.certificates) == expected
    assert ordered.complete == (ROOT_CERT in others)
