"""The TLS policy (Mozilla intermediate 6.0) as real in-memory handshakes.

sslyze's full check runs in scripts/check-tls-policy (its own venv, CI).
"""

from __future__ import annotations

from typing import Any

import pytest
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.task import Clock

from aegis.tls.policy import (
    INTERMEDIATE,
    TLS13_ONLY,
    TLSPolicy,
    certificate_context,
    policy_context,
    served_chain,
    single_certificate_factory,
    supported_groups,
)
from tests.test_tls_support import PKI, ClientCreator, echo_factory, handshake

pki = PKI()
ECDSA = pki.leaf("admin.example.com", cert_id=None)
RSA = pki.leaf("admin.example.com", cert_id=None, key_type=__import__("trustme").KeyType.RSA)


def server(certificate: Any = ECDSA, policy: TLSPolicy = INTERMEDIATE) -> Any:
    return single_certificate_factory(certificate, echo_factory(), Clock(), policy)


def test_defaults_negotiate_tls13_with_the_hybrid_group_when_available() -> None:
    result = handshake(server(), ClientCreator())
    assert result.ok
    connection = result.client.getHandle()
    assert connection.get_protocol_version_name() == "TLSv1.3"
    assert (connection.get_group_name() or "").lower() == supported_groups()[0].lower()


def test_groups_are_exactly_the_policy() -> None:
    assert supported_groups()[-3:] == ("X25519", "P-256", "P-384")
    assert set(supported_groups()) <= {"X25519MLKEM768", "X25519", "P-256", "P-384"}
    for group in ("X25519", "P-256", "P-384"):
        result = handshake(server(), ClientCreator(groups=group))
        assert result.ok, group
        wire = {"X25519": "x25519", "P-256": "secp256r1", "P-384": "secp384r1"}[group]
        assert (result.client.getHandle().get_group_name() or "").lower() == wire
    for group in ("P-521", "X448", "ffdhe2048"):
        assert not handshake(server(), ClientCreator(groups=group)).ok, group


@pytest.mark.parametrize("certificate", [ECDSA, RSA], ids=["ecdsa", "rsa"])
@pytest.mark.parametrize(
    ("cipher", "accepted"),
    [
        (b"ECDHE-ECDSA-AES128-GCM-SHA256", "ecdsa"),
        (b"ECDHE-RSA-AES256-GCM-SHA384", "rsa"),
        (b"ECDHE-ECDSA-CHACHA20-POLY1305", "ecdsa"),
        (b"ECDHE-RSA-CHACHA20-POLY1305", "rsa"),
        (b"ECDHE-ECDSA-AES128-SHA256", None),  # CBC
        (b"ECDHE-RSA-AES256-SHA", None),  # CBC, SHA-1
        (b"ECDHE-ECDSA-AES128-CCM", None),  # CCM (Twisted's default offers it)
        (b"AES128-GCM-SHA256", None),  # no forward secrecy
        (b"DHE-RSA-AES128-GCM-SHA256", None),  # finite-field DHE is not in the policy
    ],
)
def test_tls12_cipher_suites(certificate: Any, cipher: bytes, accepted: str | None) -> None:
    kind = "ecdsa" if certificate is ECDSA else "rsa"
    result = handshake(server(certificate), ClientCreator(
        max_version=SSL.TLS1_2_VERSION, ciphers=cipher))
    assert result.ok == (accepted == kind)
    if result.ok:
        assert result.client.getHandle().get_cipher_name() == cipher.decode()


@pytest.mark.parametrize("version", [SSL.TLS1_VERSION, SSL.TLS1_1_VERSION])
def test_old_versions_refused(version: int) -> None:
    context_version = ClientCreator(max_version=version)
    assert not handshake(server(), context_version).ok


def test_tls13_only_policy_refuses_tls12() -> None:
    assert not handshake(server(policy=TLS13_ONLY),
                         ClientCreator(max_version=SSL.TLS1_2_VERSION)).ok
    assert handshake(server(policy=TLS13_ONLY), ClientCreator()).ok


def test_no_compression_no_renegotiation_no_tickets() -> None:
    options = policy_context().set_options(0)
    for flag in (SSL.OP_NO_COMPRESSION, SSL.OP_NO_RENEGOTIATION, SSL.OP_NO_TICKET):
        assert options & flag


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_sessions_resume_from_the_server_cache(version: int) -> None:
    factory = server()
    client = ClientCreator(max_version=version)
    first = handshake(factory, client)
    first.exchange(b"GET / HTTP/1.1\r\n\r\n")  # TLS 1.3 tickets arrive after the handshake
    assert _lib.SSL_session_reused(first.client.getHandle()._ssl) == 0
    client.session = first.client.getHandle().get_session()
    assert client.session is not None
    second = handshake(factory, client)
    assert second.ok
    assert _lib.SSL_session_reused(second.client.getHandle()._ssl) == 1


def test_chain_is_served_without_the_leaf_twice() -> None:
    assert served_chain(ECDSA) == ECDSA.chain[1:]
    result = handshake(server(), ClientCreator())
    assert result.peer_chain() == list(ECDSA.chain)


def test_mismatched_key_fails_at_construction_without_showing_the_key() -> None:
    broken = type(ECDSA)(
        id=None, source="custom", names=ECDSA.names, leaf=ECDSA.leaf, chain=ECDSA.chain,
        key=pki.leaf("other.example.com").key, not_before=ECDSA.not_before,
        not_after=ECDSA.not_after,
    )
    with pytest.raises(SSL.Error) as caught:
        certificate_context(broken)
    assert "PRIVATE KEY" not in str(caught.value)
    assert "key=" not in repr(broken)


def test_alpn_is_the_callers_choice() -> None:
    h2 = handshake(server(), ClientCreator(alpn=(b"http/1.1", b"h2")))
    assert h2.client.negotiatedProtocol == b"h2"
    none = handshake(server(policy=TLSPolicy(alpn=())), ClientCreator(alpn=(b"h2",)))
    assert none.ok and none.client.negotiatedProtocol is None


def test_policy_rejects_unknown_versions() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        TLSPolicy(min_version="1.1")
