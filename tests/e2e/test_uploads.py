"""Certificate uploads to a real `aegis run`: ACCEPTANCE 1-3 and fault 1 (a costly encrypted
key no longer freezes the process: the proxy keeps answering while it is refused)."""

from __future__ import annotations

import threading
import time

from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.conftest import Stack
from tests.test_certs_pbe import pbkdf2_key


def pair(stack: Stack, name: str) -> tuple[str, str]:
    leaf = stack.ca.issue_cert(name)
    key = leaf.private_key_pem.bytes()
    stack.secrets.append(key.splitlines()[2])  # a line of the key's base64 body
    return "".join(b.bytes().decode() for b in leaf.cert_chain_pems), key.decode()


def test_line_1_malformed_pem(stack: Stack) -> None:
    cert, key = pair(stack, "e2e-pem.example.com")
    broken = [
        ({"cert_pem": cert.replace("MI", "!!", 1), "key_pem": key}, "cert_pem"),  # bad base64
        ({"cert_pem": cert.rsplit("-----END", 1)[0], "key_pem": key}, "cert_pem"),  # no END
        ({"cert_pem": "\x30\x82\x01\x00", "key_pem": key}, "cert_pem"),  # DER bytes
        ({"cert_pem": cert, "key_pem": key + key}, "key_pem"),  # two keys
    ]
    for body, field in broken:
        status, answer = stack.api("POST", "/api/v1/certificates", body)
        assert status == 400 and answer["error"]["field"] == field, answer
    status, listed = stack.api("GET", "/api/v1/certificates")
    assert status == 200
    assert not [c for c in listed if "e2e-pem.example.com" in c["domains"]]


def test_line_2_key_mismatch(stack: Stack) -> None:
    cert, key = pair(stack, "e2e-mismatch.example.com")
    status, stored = stack.api("POST", "/api/v1/certificates", {"cert_pem": cert, "key_pem": key})
    assert status == 201
    _, other_key = pair(stack, "e2e-other.example.com")
    status, answer = stack.api("PUT", f"/api/v1/certificates/{stored['id']}",
                               {"cert_pem": cert, "key_pem": other_key})
    assert status == 400 and answer["error"]["code"] == "key_mismatch"
    status, shown = stack.api("GET", f"/api/v1/certificates/{stored['id']}")
    assert status == 200 and shown["expires_at"] == stored["expires_at"]


def test_line_3_and_fault_1_encrypted_keys(stack: Stack) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, _ = pair(stack, "e2e-enc.example.com")
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")).decode()
    status, answer = stack.api("POST", "/api/v1/certificates", {"cert_pem": cert, "key_pem": key})
    assert status == 400 and answer["error"]["field"] == "key_passphrase"  # line 3
    # fault 1: while a key with 40 million PBKDF2 iterations is refused, plain HTTP answers.
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            stack.exchange(stack.plain_socket(), b"GET / HTTP/1.1\r\nHost: x.invalid\r\n"
                           b"Connection: close\r\n\r\n")
            latencies.append(time.monotonic() - started)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        started = time.monotonic()
        status, answer = stack.api("POST", "/api/v1/certificates", {
            "cert_pem": cert, "key_pem": pbkdf2_key(40_000_000), "key_passphrase": "pw"})
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    assert status == 400 and answer["error"]["code"] == "key_encryption_too_costly"
    assert answer["error"]["field"] == "key_pem"
    assert elapsed < 2 and latencies and max(latencies) < 1.0


def test_fault_1_for_an_inline_host_key(stack: Stack) -> None:
    cert, _ = pair(stack, "e2e-inline.example.com")
    started = time.monotonic()
    status, answer = stack.api("POST", "/api/v1/hosts", {
        "domain": "e2e-inline.example.com", "upstream": "http://127.0.0.1:9",
        "ssl_mode": "custom", "ssl_cert_pem": cert, "ssl_key_pem": pbkdf2_key(40_000_000),
        "ssl_key_passphrase": "pw"})
    assert time.monotonic() - started < 2
    assert status == 400 and answer["error"]["code"] == "key_encryption_too_costly"
    assert answer["error"]["field"] == "ssl_key_pem"
