"""The HTTPS TLS layer in memory: real pyOpenSSL handshakes through https_factory over iosim."""

from __future__ import annotations

from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.test.iosim import FakeAddress

from aegis.tls.policy import TLSPolicy
from aegis.tls.selection import MemoryCertificates, SelectionState, SelectionTable
from aegis.tls.sni import https_factory
from aegis.tls.transport import connection_info
from tests.test_tls_support import NOW, PKI, ClientCreator, echo_factory, handshake, host

pki = PKI()
FALLBACK = pki.leaf("fallback.invalid", cert_id=None)
APP = pki.leaf("app.example.com")
WILD = pki.leaf("*.example.net")
V13 = pki.leaf("v13.example.com")


def make_state() -> SelectionState:
    return SelectionState(
        MemoryCertificates([APP, WILD, V13]),
        FALLBACK,
        hosts=[
            host("app.example.com", ssl_cert_id=APP.id),
            host("v13.example.com", ssl_cert_id=V13.id, tls_min_version="1.3"),
        ],
    )


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(NOW.timestamp())  # certificates are checked against the clock's moment
    return clock


@pytest.fixture
def state() -> SelectionState:
    return make_state()


@pytest.fixture
def factory(state: SelectionState, clock: Clock) -> Any:
    return https_factory(state, echo_factory(), clock)


@pytest.fixture
def logged() -> Any:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.mark.parametrize(
    ("server_name", "expected", "step"),
    [
        (b"app.example.com", APP, "host_binding"),
        (b"APP.EXAMPLE.COM.", APP, "host_binding"),
        (b"x.example.net", WILD, "domain_match"),
        (b"unknown.example.org", FALLBACK, "fallback"),
        (None, FALLBACK, "fallback"),
        (b"bad_name.example.com", FALLBACK, "fallback"),
    ],
)
def test_certificate_per_sni(
    factory: Any, server_name: bytes | None, expected: Any, step: str
) -> None:
    result = handshake(factory, ClientCreator(server_name))
    assert result.ok
    assert result.peer_leaf() == expected.leaf
    info = connection_info(result.server.wrappedProtocol.transport)
    assert info is not None
    assert info.step == step
    assert info.certificate is expected
    assert info.raw_server_name == server_name


def test_intermediate_is_served(factory: Any) -> None:
    result = handshake(factory, ClientCreator(b"app.example.com"))
    assert result.peer_chain() == list(APP.chain)
    assert len(APP.chain) == 2


def test_sni_is_visible_to_the_protocol_above(factory: Any) -> None:
    result = handshake(factory, ClientCreator(b"App.Example.com"))
    answer = result.exchange(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
    assert answer.endswith(b"sni=app.example.com step=host_binding")


@pytest.mark.parametrize(
    "raw",
    [
        b"evil\x01.example.com",
        b"a\x1b[31m.example.com",
        b"sp ace.example.com",
        b"del\x7f.example.com",
    ],
)
def test_control_characters_are_refused_and_logged_sanitised(
    factory: Any, logged: Any, raw: bytes
) -> None:
    result = handshake(factory, ClientCreator(raw))
    assert not result.ok
    assert result.probe.lost is not None
    texts = [e.get("sni") for e in logged if "SNI" in e.get("log_format", "")]
    assert texts and all(t.isprintable() and "\x1b" not in t for t in texts)


def test_tls12_client_refused_by_13_host_accepted_by_12_host(factory: Any) -> None:
    refused = handshake(factory, ClientCreator(b"v13.example.com", max_version=SSL.TLS1_2_VERSION))
    assert not refused.ok
    accepted = handshake(factory, ClientCreator(b"app.example.com", max_version=SSL.TLS1_2_VERSION))
    assert accepted.ok
    assert accepted.client.getHandle().get_protocol_version_name() == "TLSv1.2"
    modern = handshake(factory, ClientCreator(b"v13.example.com"))
    assert modern.ok and modern.peer_leaf() == V13.leaf


def test_selection_crash_fails_closed(clock: Clock, logged: Any) -> None:
    class Exploding:
        def current(self) -> SelectionTable:
            raise RuntimeError("table gone")

    result = handshake(
        https_factory(Exploding(), echo_factory(), clock), ClientCreator(b"app.example.com")
    )
    assert not result.ok
    assert any(e.get("log_failure") is not None for e in logged)


def test_unusable_certificate_falls_back_and_is_logged_once(clock: Clock, logged: Any) -> None:
    other = pki.leaf("broken.example.com")
    mismatched = type(other)(
        id=other.id,
        source="custom",
        names=other.names,
        leaf=other.leaf,
        chain=other.chain,
        key=APP.key,
        not_before=other.not_before,
        not_after=other.not_after,
    )
    state = SelectionState(MemoryCertificates([mismatched]), FALLBACK)
    result = handshake(
        https_factory(state, echo_factory(), clock), ClientCreator(b"broken.example.com")
    )
    assert result.ok
    assert result.peer_leaf() == FALLBACK.leaf


def test_alpn_prefers_h2_and_the_list_is_the_callers(state: SelectionState, clock: Clock) -> None:
    both = handshake(
        https_factory(state, echo_factory(), clock),
        ClientCreator(b"app.example.com", alpn=(b"http/1.1", b"h2")),
    )
    assert both.client.negotiatedProtocol == b"h2"
    h1_only = https_factory(state, echo_factory(), clock, policy=TLSPolicy(alpn=(b"http/1.1",)))
    result = handshake(h1_only, ClientCreator(b"app.example.com", alpn=(b"h2", b"http/1.1")))
    assert result.client.negotiatedProtocol == b"http/1.1"
    unknown = handshake(h1_only, ClientCreator(b"app.example.com", alpn=(b"spdy/3",)))
    assert unknown.ok and unknown.client.negotiatedProtocol is None


def test_certificate_change_applies_to_next_handshake_only(
    state: SelectionState, factory: Any
) -> None:
    first = handshake(factory, ClientCreator(b"app.example.com"))
    assert first.peer_leaf() == APP.leaf
    renewed = pki.leaf("app.example.com", cert_id=APP.id)
    state._certificates = MemoryCertificates([renewed])  # the registry swapped its entry
    state.certificates_changed()
    second = handshake(factory, ClientCreator(b"app.example.com"))
    assert second.peer_leaf() == renewed.leaf
    # The first connection is still up and still talks.
    assert first.exchange(b"GET / HTTP/1.1\r\n\r\n").endswith(b"step=host_binding")
    assert first.probe.lost is None


def test_500_stalled_handshakes_closed_at_10s_new_client_served(factory: Any, clock: Clock) -> None:
    stalled = []
    for _ in range(500):
        protocol = factory.buildProtocol(FakeAddress())
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"\x16\x03\x01")  # a ClientHello that never finishes
        stalled.append(transport)
    clock.advance(9.9)
    assert not any(t.disconnecting for t in stalled)
    fresh = handshake(factory, ClientCreator(b"app.example.com"), clock)
    assert fresh.ok
    clock.advance(0.1)
    assert all(t.disconnecting for t in stalled)
    clock.advance(30)
    fresh.pump.flush()
    assert fresh.probe.lost is None  # its deadline was cancelled when the handshake finished


def test_completed_handshake_is_not_timed_out(factory: Any, clock: Clock) -> None:
    done = handshake(factory, ClientCreator(b"app.example.com"), clock)
    assert done.ok
    clock.advance(3600)
    done.pump.flush()
    assert done.probe.lost is None
    assert not [c for c in clock.getDelayedCalls() if c.active()]
