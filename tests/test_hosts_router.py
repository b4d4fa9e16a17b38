"""The host router: challenges first, 404 for strangers, redirects, HSTS, and 421."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from aegis.hosts.router import MISDIRECTED, NOT_FOUND, HostRouter, hsts_value
from aegis.proxy.routing import ConnectionInfo, Forward, LocalResponse, RequestHead
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.store.memory import MemoryStore
from aegis.tls.selection import MemoryCertificates, SelectionState
from tests.test_tls_support import PKI, host

NOW = datetime.now(UTC)
PLAIN = ConnectionInfo("http", "127.0.0.1", 5000)


def https(sni: str | None) -> ConnectionInfo:
    return ConnectionInfo("https", "127.0.0.1", 5000, sni=sni, alpn="http/1.1")


def head(host_name: str, target: bytes = b"/", method: bytes = b"GET") -> RequestHead:
    return RequestHead(method=method, target=target, version="1.1", headers=[],
                       host=host_name)


def make_router(*hosts: object, certificates: tuple[object, ...] = (), https_port: int = 443,
                responder: ChallengeResponder | None = None) -> HostRouter:
    pki = PKI()
    state = SelectionState(MemoryCertificates(certificates),  # type: ignore[arg-type]
                           pki.leaf("fallback.invalid", cert_id=None, source="local"),
                           None, hosts)  # type: ignore[arg-type]
    router = HostRouter(state, lambda: https_port, responder, lambda: NOW)
    router.update(hosts)  # type: ignore[arg-type]
    return router


def test_unknown_host_is_404_on_both_ports() -> None:
    router = make_router(host("app.example.com", ssl_mode="none"))
    assert router.route(head("other.example.com"), PLAIN) is NOT_FOUND
    assert router.route(head("other.example.com"), https("other.example.com")) is NOT_FOUND


def test_forward_to_upstream_and_hsts_only_over_https() -> None:
    record = replace(host("app.example.com", ssl_mode="none"), upstream="https://10.1.2.3:8443",
                     upstream_tls_verify=False, hsts_enabled=True, hsts_max_age=600,
                     hsts_include_subdomains=True)
    router = make_router(record)
    plain = router.route(head("app.example.com"), PLAIN)
    secure = router.route(head("app.example.com"), https("app.example.com"))
    assert isinstance(plain, Forward) and isinstance(secure, Forward)
    assert (plain.scheme, plain.host, plain.port, plain.verify_tls) == (
        "https", "10.1.2.3", 8443, False)
    assert plain.response_headers == []
    assert secure.response_headers == [
        (b"strict-transport-security", b"max-age=600; includeSubDomains")]


def test_hsts_value_with_preload() -> None:
    record = replace(host("a.example.com"), hsts_enabled=True, hsts_max_age=31536000,
                     hsts_include_subdomains=True, hsts_preload=True)
    assert hsts_value(record) == b"max-age=31536000; includeSubDomains; preload"
    assert hsts_value(replace(record, hsts_enabled=False)) is None


def test_force_https_redirects_with_path_query_and_port() -> None:
    record = replace(host("app.example.com", ssl_mode="none"), force_https=True)
    answer = make_router(record, https_port=8443).route(head("app.example.com", b"/a?b=1"), PLAIN)
    assert isinstance(answer, LocalResponse) and answer.status == 301
    assert (b"location", b"https://app.example.com:8443/a?b=1") in answer.headers
    default = make_router(record).route(head("app.example.com", b"/x"), PLAIN)
    assert isinstance(default, LocalResponse)
    assert (b"location", b"https://app.example.com/x") in default.headers
    # HTTPS requests to a force_https host are proxied, not redirected in a loop
    assert isinstance(make_router(record).route(head("app.example.com"), https(None)), Forward)


def test_acme_challenges_answered_before_redirects_and_never_proxied() -> None:
    store = MemoryStore()
    responder = ChallengeResponder(store, lambda: NOW)
    responder.publish("tok_en-1", "tok_en-1.thumb", "app.example.com")
    record = replace(host("app.example.com", ssl_mode="letsencrypt"), force_https=True)
    router = make_router(record, responder=responder)
    path = b"/.well-known/acme-challenge/tok_en-1"
    answer = router.route(head("app.example.com", path), PLAIN)
    assert isinstance(answer, LocalResponse)
    assert (answer.status, answer.body) == (200, b"tok_en-1.thumb")
    for bad in (head("other.example.com", path), head("app.example.com", path, b"POST"),
                head("app.example.com", b"/.well-known/acme-challenge/..%2ftok_en-1"),
                head("app.example.com", b"/.well-known/acme-challenge/unknown")):
        refused = router.route(bad, PLAIN)
        assert isinstance(refused, LocalResponse) and refused.status == 404
    # without a responder every challenge path is a 404, not a redirect or a proxy
    bare = make_router(record).route(head("app.example.com", path), PLAIN)
    assert isinstance(bare, LocalResponse) and bare.status == 404


def test_misdirected_request_when_sni_and_host_have_different_certificates() -> None:
    pki = PKI()
    first, second = pki.leaf("a.example.com"), pki.leaf("b.example.com")
    a = host("a.example.com", ssl_cert_id=first.id)
    b = host("b.example.com", ssl_cert_id=second.id)
    router = make_router(a, b, certificates=(first, second))
    assert router.route(head("b.example.com"), https("a.example.com")) is MISDIRECTED
    assert isinstance(router.route(head("b.example.com"), https("b.example.com")), Forward)
    assert isinstance(router.route(head("b.example.com"), https("B.EXAMPLE.COM.")), Forward)


def test_shared_certificate_allows_connection_reuse() -> None:
    pki = PKI()
    shared = pki.leaf("a.example.com", "b.example.com")
    a = host("a.example.com", ssl_cert_id=shared.id)
    b = host("b.example.com", ssl_cert_id=shared.id)
    router = make_router(a, b, certificates=(shared,))
    assert isinstance(router.route(head("b.example.com"), https("a.example.com")), Forward)
