"""TLS-ALPN-01 (RFC 8737) on the production HTTPS listener: the challenge certificate, what
openssl s_client and Python clients get while an answer is published, and (against Pebble,
port 80 closed) a certificate obtained by TLS-ALPN-01 alone."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor

from aegis.sources.acme.challenges import (
    AUTO,
    HTTP_01,
    TLS_ALPN_01,
    ChallengeChoice,
    ValidationFailed,
)
from aegis.sources.acme.tlsalpn01 import (
    ACME_IDENTIFIER,
    TlsAlpnResponder,
    acme_identifier_value,
    challenge_certificate,
    sni_for,
)
from aegis.tls.socket_tls import ACME_TLS_1
from tests.test_tls_loopback import APP, LE, der, in_thread, make_state, python_get, serve

KEY_AUTHORIZATION = ("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
                     "nysa2fhf6cHBVoGqaHqqMsEpLiHDxU3JgDkTIdIm0PI")


def test_the_challenge_certificate_carries_the_critical_acme_identifier() -> None:
    cert, _ = challenge_certificate("www.example.com", KEY_AUTHORIZATION)
    extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    value = extension.value.value
    assert value[:2] == b"\x04\x20" and len(value) == 34  # DER OCTET STRING of 32 bytes
    assert value == acme_identifier_value(KEY_AUTHORIZATION)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["www.example.com"]
    assert cert.not_valid_before_utc <= datetime.now(UTC) <= cert.not_valid_after_utc


def test_ip_identifiers_use_the_reverse_name_as_sni() -> None:
    assert sni_for("192.0.2.7") == "7.2.0.192.in-addr.arpa"
    assert sni_for("Example.COM") == "example.com"
    cert, _ = challenge_certificate("192.0.2.7", KEY_AUTHORIZATION)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]


def test_auto_alternates_after_a_failed_validation() -> None:
    choice = ChallengeChoice(AUTO)
    assert choice.order("a.test") == (HTTP_01, TLS_ALPN_01)
    choice.failed("a.test", HTTP_01, ValidationFailed("http-01 validation failed", HTTP_01))
    assert choice.order("a.test") == (TLS_ALPN_01, HTTP_01)
    choice.failed("a.test", TLS_ALPN_01, RuntimeError("network"))  # not a validation
    assert choice.order("a.test") == (TLS_ALPN_01, HTTP_01)
    choice.succeeded("a.test", TLS_ALPN_01)
    assert choice.order("b.test") == (HTTP_01, TLS_ALPN_01)
    assert ChallengeChoice(TLS_ALPN_01).order("a.test") == (TLS_ALPN_01,)
    with pytest.raises(ValueError):
        ChallengeChoice("dns-01")


# the production listener over loopback, with openssl s_client


def s_client(port: int, server_name: str, alpn: str) -> tuple[bytes | None, str | None]:
    """(DER leaf, negotiated ALPN) from ``openssl s_client -alpn``."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name,
         "-alpn", alpn],
        input=b"", capture_output=True, timeout=20, check=False)
    text = result.stdout.decode()
    found = re.search(r"ALPN protocol: (\S+)", text)
    if "-----BEGIN CERTIFICATE-----" not in text:
        return None, None
    return der(x509.load_pem_x509_certificate(text.encode())), found.group(1) if found else None


def _is_challenge(leaf: bytes | None) -> bool:
    if leaf is None:
        return False
    try:
        x509.load_der_x509_certificate(leaf).extensions.get_extension_for_oid(ACME_IDENTIFIER)
    except x509.ExtensionNotFound:
        return False
    return True


@pytest.fixture
def responder() -> Iterator[TlsAlpnResponder]:
    answers = TlsAlpnResponder()
    yield answers
    answers.close()


@pytest_twisted.ensureDeferred
async def test_acme_tls_1_gets_the_challenge_only_for_a_published_name(
    responder: TlsAlpnResponder,
) -> None:
    port, number = await serve(make_state())
    try:
        responder.publish("le.example.com", KEY_AUTHORIZATION)
        leaf, alpn = await in_thread(s_client, number, "le.example.com", "acme-tls/1")
        assert _is_challenge(leaf) and alpn == ACME_TLS_1.decode()
        cert = x509.load_der_x509_certificate(leaf)
        assert cert.extensions.get_extension_for_oid(ACME_IDENTIFIER).value.value == (
            acme_identifier_value(KEY_AUTHORIZATION))
        # the same ALPN with a normal SNI: the normal certificate, no ALPN agreed
        leaf, alpn = await in_thread(s_client, number, "app.example.com", "acme-tls/1")
        assert leaf == der(APP.chain[0]) and alpn is None
        # acme-tls/1 among other protocols is not a validation (RFC 8737: offered alone)
        leaf, alpn = await in_thread(s_client, number, "le.example.com", "acme-tls/1,http/1.1")
        assert not _is_challenge(leaf) and alpn == "http/1.1"
        # a normal client while the validation is running gets the normal certificate
        leaf, alpn = await in_thread(s_client, number, "le.example.com", "h2,http/1.1")
        assert leaf == der(LE.chain[0]) and alpn == "h2"
        normal, body = await in_thread(python_get, number, "le.example.com")
        assert normal == der(LE.chain[0]) and body
        responder.withdraw("le.example.com")
        leaf, alpn = await in_thread(s_client, number, "le.example.com", "acme-tls/1")
        assert leaf == der(LE.chain[0]) and alpn is None
    finally:
        await port.stopListening()


# against Pebble: port 80 closed, the HTTPS listener answers


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_certificate_by_tls_alpn_01_with_port_80_closed(tmp_path: Any) -> None:
    from aegis.testing.pebble import pebble_available, start_pebble
    from aegis.tls.endpoint import https_endpoint
    from tests.test_acme_pebble import ChallengeSite, Node, assert_chains_to_pebble
    from tests.test_tls_support import echo_factory, port_number

    if not pebble_available():
        pytest.skip("pebble is not installed")
    endpoint = https_endpoint(reactor, "tcp:0:interface=127.0.0.1", make_state())
    listener = await endpoint.listen(echo_factory())
    pebble = start_pebble(tmp_path / "pebble", tls_port=port_number(listener))
    try:
        site = ChallengeSite()  # never listening: Pebble's httpPort stays closed
        node = Node(pebble, site)
        node.challenge = TLS_ALPN_01
        await node.issue("alpn.example.test")
        state = node.state("alpn.example.test")
        assert state.status == "valid", state.last_error
        (cert,) = node.certificates()
        assert_chains_to_pebble(cert.chain_pem, "alpn.example.test", pebble)
        # Nothing listens on Pebble's httpPort: only TLS-ALPN-01 could have validated it.
        assert node.parts is not None and node.parts.tls_alpn is not None
        assert node.parts.tls_alpn.published() == []  # withdrawn after validation
        await node.stop()
        node.parts.tls_alpn.close()
    finally:
        await listener.stopListening()
        pebble.close()
