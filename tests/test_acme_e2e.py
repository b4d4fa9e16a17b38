"""Let's Encrypt as a user meets it, against a real ACME server (Pebble, nonce rejection on):
`aegis run`, a `letsencrypt` host created through the API, and a real TLS client that then
gets a certificate chaining to Pebble's root."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegis.testing.pebble import PebbleServer, pebble_available, start_pebble
from tests.aegis_process import AegisProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not pebble_available(), reason="pebble is not installed"),
]


def api(aegis: AegisProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    ca = aegis.workdir / ".cache" / "ssl" / "aegis-local-ca.crt"
    token = (aegis.workdir / "data" / "admin-token").read_text().strip()
    connection = http.client.HTTPSConnection(
        "127.0.0.1", aegis.ports["admin listener"],
        context=ssl.create_default_context(cafile=str(ca)), timeout=20)
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    connection.request(method, "/api/v1" + path, json.dumps(body) if body is not None else None,
                       headers)
    response = connection.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else None


def verified_handshake(aegis: AegisProcess, name: str, root: Path) -> bool:
    """True once ``name`` is served a certificate that verifies against Pebble's root."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection(("127.0.0.1", aegis.ports["HTTPS listener"]), 5) as raw, \
                context.wrap_socket(raw, server_hostname=name):
            return True
    except ssl.SSLCertVerificationError:
        return False


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[PebbleServer]:
    server = start_pebble(tmp_path / "pebble")
    try:
        yield server
    finally:
        server.close()


def start_aegis(workdir: Path, pebble: PebbleServer) -> AegisProcess:
    aegis = AegisProcess(workdir, env={
        "AEGIS_HTTP_LISTEN": f"tcp:{pebble.http_port}:interface=127.0.0.1",
        "AEGIS_ACME_DIRECTORY": pebble.directory_url,
        "AEGIS_ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "AEGIS_ACME_EMAIL": "ops@example.com",
    })
    aegis.start(expect=("HTTP listener", "HTTPS listener", "admin listener"))
    return aegis


def test_letsencrypt_host_gets_a_certificate_from_the_ca(
    tmp_path: Path, pebble: PebbleServer
) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    workdir = tmp_path / "aegis"
    workdir.mkdir()
    aegis = start_aegis(workdir, pebble)
    try:
        status, host = api(aegis, "POST", "/hosts", {
            "domain": "le.example.test", "aliases": ["www.le.example.test"],
            "upstream": "http://127.0.0.1:9", "ssl_mode": "letsencrypt", "force_https": True,
        })
        assert status == 201, host
        deadline = time.monotonic() + 60
        while not (verified_handshake(aegis, "le.example.test", root)
                   and verified_handshake(aegis, "www.le.example.test", root)):
            assert time.monotonic() < deadline, aegis.text()[-3000:]
            time.sleep(0.3)
        status, certificates = api(aegis, "GET", "/certificates")
        assert status == 200
        issued = [c for c in certificates if c["source"] == "letsencrypt"]
        assert issued and all(c["auto_renew"] for c in issued)
        assert {"le.example.test", "www.le.example.test"} <= {
            d for c in issued for d in c["domains"]}
        status, shown = api(aegis, "GET", f"/hosts/{host['id']}")
        assert shown["serving_certificate"]["step"] == "autocert"
        states = {entry["name"]: entry for entry in shown["issuance"]}
        assert set(states) == {"le.example.test", "www.le.example.test"}
        for entry in states.values():
            assert entry["status"] == "valid" and entry["last_error"] is None
            assert entry["renews_at"] and entry["last_attempt_at"]
        orders = pebble.orders_created()
        assert aegis.stop() == 0
        text = aegis.text()
        assert "cert_obtained" in text and "PRIVATE KEY" not in text
    finally:
        aegis.kill()
    # a restart serves the stored certificate and orders nothing new
    again = start_aegis(workdir, pebble)
    try:
        assert verified_handshake(again, "le.example.test", root)
        time.sleep(1.0)
        assert pebble.orders_created() == orders
        assert again.stop() == 0
    finally:
        again.kill()


def test_unreachable_ca_is_visible_in_the_api_and_the_fallback_serves(
    tmp_path: Path, pebble: PebbleServer
) -> None:
    pebble.stop()  # the CA is down for the whole test
    workdir = tmp_path / "aegis"
    workdir.mkdir()
    aegis = start_aegis(workdir, pebble)
    try:
        status, host = api(aegis, "POST", "/hosts", {
            "domain": "down.example.test", "upstream": "http://127.0.0.1:9",
            "ssl_mode": "letsencrypt"})
        assert status == 201, host
        deadline = time.monotonic() + 45
        while True:
            status, shown = api(aegis, "GET", f"/hosts/{host['id']}")
            state = shown["issuance"][0]
            if state["status"] == "failed":
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.5)
        assert state["last_error"] and state["next_attempt_at"] and state["last_attempt_at"]
        assert shown["serving_certificate"]["step"] == "fallback"
        context = ssl.create_default_context(
            cafile=str(workdir / ".cache" / "ssl" / "aegis-local-ca.crt"))
        with socket.create_connection(("127.0.0.1", aegis.ports["HTTPS listener"]), 5) as raw, \
                context.wrap_socket(raw, server_hostname="down.example.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert aegis.stop() == 0
        assert "cert_failed" in aegis.text()
    finally:
        aegis.kill()
