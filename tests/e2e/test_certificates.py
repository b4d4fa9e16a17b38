"""Certificates and hosts on a real `aegis run`: ACCEPTANCE 4-9, 19, 22, 31, 33."""

from __future__ import annotations

import socket
import sqlite3
import ssl
import threading
import time
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import Stack, wait_until
from tests.e2e.test_tls import names, served_leaf
from tests.test_certs_helpers import NOW, build_leaf, key_pem, pem


def chain(stack: Stack, name: str) -> tuple[list[str], str]:
    """Leaf, intermediate, root as PEM texts (trustme's leaf under a child CA), and the key."""
    child = stack.ca.create_child_ca()
    leaf = child.issue_cert(name)
    key = leaf.private_key_pem.bytes()
    stack.secrets.append(key.splitlines()[2])
    blobs = [b.bytes().decode() for b in leaf.cert_chain_pems]
    return [*blobs, stack.ca.cert_pem.bytes().decode()], key.decode()


def upload(stack: Stack, cert_pem: str, key: str) -> tuple[int, dict]:
    return stack.api("POST", "/api/v1/certificates", {"cert_pem": cert_pem, "key_pem": key})


def test_lines_4_and_5_chain_order_and_missing_intermediate(stack: Stack) -> None:
    (leaf, middle, root), key = chain(stack, "e2e-chain.example.com")
    status, stored = upload(stack, root + middle + leaf + middle, key)  # shuffled, duplicated
    assert status == 201 and stored["chain_complete"] is True, stored
    status, body = stack.api("GET", f"/api/v1/certificates/{stored['id']}")
    assert status == 200
    (leaf2, _, _), key2 = chain(stack, "e2e-nochain.example.com")
    status, stored = upload(stack, leaf2, key2)  # the intermediate left out
    assert status == 201 and stored["chain_complete"] is False
    unrelated = stack.ca.create_child_ca().cert_pem.bytes().decode()
    (leaf3, middle3, _), key3 = chain(stack, "e2e-stray.example.com")
    status, body = upload(stack, leaf3 + middle3 + unrelated, key3)
    assert status == 400 and body["error"]["code"] == "chain_unrelated"


def test_lines_6_and_7_expired_and_no_san(stack: Stack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    expired = build_leaf(key, ["e2e-old.example.com"], not_before=NOW - timedelta(days=60),
                         not_after=NOW - timedelta(days=1))
    status, body = upload(stack, pem(expired), key_pem(key))
    assert status == 400 and body["error"]["code"] == "expired"
    no_san = build_leaf(key, ["e2e-cn.example.com"], san=False)
    status, body = upload(stack, pem(no_san), key_pem(key))
    assert status == 400 and body["error"]["code"] == "no_san"


def test_lines_8_and_9_wildcards_and_idn(stack: Stack) -> None:
    for bad in ("*.com", "a*.example.com", "*.*.example.com", "xn--zz.example", "-a.example"):
        status, body = stack.api("POST", "/api/v1/hosts",
                                 {"domain": bad, "upstream": "http://127.0.0.1:9"})
        assert status in (400, 422) and body["error"]["field"] == "domain", bad
    status, host = stack.api("POST", "/api/v1/hosts", {"domain": "bücher.example",
                                                       "upstream": "http://127.0.0.1:9"})
    assert status == 201 and host["domain"] == "xn--bcher-kva.example"


def make_host(stack: Stack, domain: str, **extra: object) -> dict:
    (leaf, middle, _), key = chain(stack, domain)
    status, cert = upload(stack, leaf + middle, key)
    assert status == 201, cert
    status, host = stack.api("POST", "/api/v1/hosts", {
        "domain": domain, "upstream": f"http://127.0.0.1:{stack.upstream.port}",
        "ssl_mode": "custom", "ssl_cert_id": cert["id"], **extra})
    assert status == 201, host
    wait_until(lambda: names(served_leaf(stack, domain.encode())) == [domain])
    return host


def https_request(stack: Stack, sni: str, host: str, **context_args: object) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in context_args.items():
        setattr(context, name, value)
    with socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), 10) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    stack.responses.append(data)
    return data


def test_lines_19_and_22_misdirected_requests_and_tls13_hosts(stack: Stack) -> None:
    make_host(stack, "e2e-one.example.com")
    make_host(stack, "e2e-two.example.com", tls_min_version="1.3")
    assert https_request(stack, "e2e-one.example.com", "e2e-one.example.com").startswith(
        b"HTTP/1.1 200 ")
    assert https_request(stack, "e2e-one.example.com", "e2e-two.example.com").startswith(
        b"HTTP/1.1 421 ")  # line 19
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    assert https_request(stack, "e2e-one.example.com", "e2e-one.example.com", **tls12)
    try:
        https_request(stack, "e2e-two.example.com", "e2e-two.example.com", **tls12)
    except (ssl.SSLError, ConnectionError):
        pass  # line 22: refused
    else:
        raise AssertionError("a TLS 1.2 client reached a TLS 1.3 host")


def test_line_31_cloudflare_refusal_is_clear_and_the_token_is_never_kept(stack: Stack) -> None:
    wrong = "e2e-wrong-cloudflare-token-abcdef123456"
    stack.secrets.append(wrong.encode())
    status, body = stack.api("POST", "/api/v1/certificates/cloudflare-origin", {
        "api_token": wrong, "hostnames": ["e2e-cf.example.com"]})
    assert 400 <= status < 500 and status != 404, body
    assert body["error"]["message"]
    status, body = stack.api("POST", "/api/v1/certificates/cloudflare-origin", {
        "api_token": stack.cloudflare.token, "hostnames": ["e2e-cf.example.com"],
        "zone_id": stack.cloudflare.zone_id})
    assert status == 201, body


def test_line_33_a_locked_database_is_503_and_tls_keeps_serving(stack: Stack) -> None:
    database = sqlite3.connect(stack.aegis.workdir / "data" / "aegis.db", timeout=1,
                               isolation_level=None)
    database.execute("BEGIN EXCLUSIVE")
    served: list[bool] = []
    try:
        thread = threading.Thread(target=lambda: served.append(
            served_leaf(stack, b"e2e-one.example.com") is not None))
        thread.start()
        started = time.monotonic()
        status, body = stack.api("POST", "/api/v1/hosts", {
            "domain": "e2e-locked.example.com", "upstream": "http://127.0.0.1:9"})
        thread.join()
    finally:
        database.execute("ROLLBACK")
        database.close()
    assert status == 503 and body["error"]["code"] == "store_busy", body
    assert time.monotonic() - started < 30
    assert served == [True]
