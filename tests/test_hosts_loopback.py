"""Hosts and TLS termination as a user meets them: `aegis run`, the REST API over HTTPS,
real TLS clients (Python ssl, openssl s_client, curl) on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.aegis_process import AegisProcess

pytestmark = pytest.mark.slow


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "host": self.headers["Host"],
                           "xff": self.headers.get("X-Forwarded-For"),
                           "proto": self.headers.get("X-Forwarded-Proto")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Admin:
    def __init__(self, aegis: AegisProcess) -> None:
        self.port = aegis.ports["admin listener"]
        self.ca = aegis.workdir / ".cache" / "ssl" / "aegis-local-ca.crt"
        self.token = (aegis.workdir / "data" / "admin-token").read_text().strip()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        context = ssl.create_default_context(cafile=str(self.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context,
                                                 timeout=20)
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        connection.request(method, "/api/v1" + path, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        connection.close()
        return response.status, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("hosts")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    aegis = AegisProcess(workdir, env={"AEGIS_ACME_DIRECTORY": "https://127.0.0.1:9/dir"})
    aegis.start(expect=("HTTP listener", "HTTPS listener", "admin listener"))
    ca = trustme.CA()
    try:
        yield {"aegis": aegis, "admin": Admin(aegis), "ca": ca, "workdir": workdir,
               "upstream": f"http://127.0.0.1:{upstream.server_address[1]}"}
    finally:
        assert aegis.stop() == 0
        upstream.shutdown()
        text = aegis.text()
        assert "Traceback" not in text and "PRIVATE KEY" not in text


def upload(world: dict[str, Any], *names: str) -> dict[str, Any]:
    leaf = world["ca"].issue_cert(*names)
    status, body = world["admin"].call("POST", "/certificates", {
        "cert_pem": "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems),
        "key_pem": leaf.private_key_pem.bytes().decode(),
    })
    assert status == 201, body
    return dict(body)


def served(world: dict[str, Any], sni: str | None, version: ssl.TLSVersion | None = None) -> (
    dict[str, Any]
):
    """The certificate a real TLS client gets for ``sni``: its SAN names and issuer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = context.maximum_version = version
    port = world["aegis"].ports["HTTPS listener"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    certificate = x509.load_der_x509_certificate(der)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {"names": sorted(names.value.get_values_for_type(x509.DNSName)),
            "issuer": certificate.issuer.rfc4514_string()}


def test_selection_order_over_loopback(world: dict[str, Any]) -> None:
    admin = world["admin"]
    bound = upload(world, "bound.example.com", "www.bound.example.com")
    upload(world, "*.wild.example.com")
    for body in (
        {"domain": "bound.example.com", "aliases": ["www.bound.example.com"],
         "upstream": world["upstream"], "ssl_mode": "custom", "ssl_cert_id": bound["id"]},
        {"domain": "shop.wild.example.com", "upstream": world["upstream"]},
        {"domain": "auto.example.com", "upstream": world["upstream"], "ssl_mode": "letsencrypt"},
    ):
        status, answer = admin.call("POST", "/hosts", body)
        assert status == 201, answer
    # 1. host binding
    assert served(world, "bound.example.com")["names"] == [
        "bound.example.com", "www.bound.example.com"]
    # 2. domain match, any name a stored certificate covers (wildcard)
    assert served(world, "shop.wild.example.com")["names"] == ["*.wild.example.com"]
    assert served(world, "other.wild.example.com")["names"] == ["*.wild.example.com"]
    # 3/4. a letsencrypt host whose CA is unreachable, and strangers: the local-CA fallback,
    # which covers every configured domain
    fallback = served(world, "auto.example.com")
    assert "Aegis Local CA" in fallback["issuer"]
    assert {"auto.example.com", "bound.example.com", "shop.wild.example.com"} <= set(
        fallback["names"])
    assert served(world, "stranger.example.net") == fallback
    assert served(world, None) == fallback
    # case and trailing dot
    assert served(world, "BOUND.EXAMPLE.COM.")["names"][0] == "bound.example.com"


def test_fallback_verifies_with_local_ca_and_proxies(world: dict[str, Any]) -> None:
    admin = world["admin"]
    status, host = admin.call("POST", "/hosts", {
        "domain": "plain.example.com", "upstream": world["upstream"], "force_https": True,
        "hsts_enabled": True, "hsts_max_age": 600,
    })
    assert status == 201, host
    aegis = world["aegis"]
    https_port = aegis.ports["HTTPS listener"]
    result = subprocess.run(
        ["curl", "-sS", "-i", "--cacert", str(admin.ca), "--resolve",
         f"plain.example.com:{https_port}:127.0.0.1", f"https://plain.example.com:{https_port}/p?q=1"],
        capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert "strict-transport-security: max-age=600" in result.stdout.lower()
    body = json.loads(result.stdout.split("\n\n", 1)[1])
    assert body["path"] == "/p?q=1" and body["proto"] == "https"
    plain = http.client.HTTPConnection("127.0.0.1", aegis.ports["HTTP listener"], timeout=10)
    plain.request("GET", "/x?y", headers={"Host": "plain.example.com"})
    response = plain.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://plain.example.com:{https_port}/x?y"
    assert response.getheader("Strict-Transport-Security") is None


def test_misdirected_request_is_421(world: dict[str, Any]) -> None:
    admin = world["admin"]
    one = upload(world, "one.example.com")
    two = upload(world, "two.example.com")
    for name, cert in (("one.example.com", one), ("two.example.com", two)):
        status, _ = admin.call("POST", "/hosts", {"domain": name, "upstream": world["upstream"],
                                                  "ssl_mode": "custom", "ssl_cert_id": cert["id"]})
        assert status == 201
    port = world["aegis"].ports["HTTPS listener"]
    result = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve",
         f"one.example.com:{port}:127.0.0.1", "-H", "Host: two.example.com",
         f"https://one.example.com:{port}/"],
        capture_output=True, text=True, timeout=20, check=False)
    assert result.stdout == "421"


def test_tls_min_version_per_host(world: dict[str, Any]) -> None:
    admin = world["admin"]
    for name, version in (("modern.example.com", "1.3"), ("compat.example.com", "1.2")):
        status, _ = admin.call("POST", "/hosts", {"domain": name, "upstream": world["upstream"],
                                                  "tls_min_version": version})
        assert status == 201
    with pytest.raises(ssl.SSLError):
        served(world, "modern.example.com", ssl.TLSVersion.TLSv1_2)
    assert served(world, "modern.example.com", ssl.TLSVersion.TLSv1_3)["names"]
    assert served(world, "compat.example.com", ssl.TLSVersion.TLSv1_2)["names"]


def named_connection(name: str, port: int) -> http.client.HTTPSConnection:
    """An HTTPS connection to 127.0.0.1 that sends ``name`` as SNI (and Host)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection(name, port, context=context, timeout=10)
    connection._create_connection = (  # type: ignore[attr-defined]
        lambda address, *args, **kwargs: socket.create_connection(("127.0.0.1", port), 10))
    return connection


def test_certificate_change_keeps_open_connections(world: dict[str, Any]) -> None:
    admin = world["admin"]
    first = upload(world, "swap.example.com")
    status, host = admin.call("POST", "/hosts", {
        "domain": "swap.example.com", "upstream": world["upstream"], "ssl_mode": "custom",
        "ssl_cert_id": first["id"]})
    assert status == 201
    port = world["aegis"].ports["HTTPS listener"]
    keep = named_connection("swap.example.com", port)
    keep.request("GET", "/1", headers={"Host": "swap.example.com"})
    assert keep.getresponse().read()
    before = keep.sock.getpeercert(binary_form=True)
    second = upload(world, "swap.example.com")
    status, _ = admin.call("PATCH", f"/hosts/{host['id']}", {"ssl_cert_id": second["id"]})
    assert status == 200
    keep.request("GET", "/2", headers={"Host": "swap.example.com"})
    assert json.loads(keep.getresponse().read())["path"] == "/2"
    assert keep.sock.getpeercert(binary_form=True) == before  # same connection, still up
    keep.close()
    fresh = named_connection("swap.example.com", port)
    fresh.request("GET", "/3", headers={"Host": "swap.example.com"})
    fresh.getresponse().read()
    assert fresh.sock.getpeercert(binary_form=True) != before
    fresh.close()
    # the first certificate is free again; the second is in use
    assert admin.call("DELETE", f"/certificates/{first['id']}")[0] == 204
    status, error = admin.call("DELETE", f"/certificates/{second['id']}")
    assert status == 409 and "swap.example.com" in json.dumps(error)


def test_inline_certificate_on_host(world: dict[str, Any]) -> None:
    leaf = world["ca"].issue_cert("inline.example.com")
    status, host = world["admin"].call("POST", "/hosts", {
        "domain": "inline.example.com", "upstream": world["upstream"], "ssl_mode": "custom",
        "ssl_cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
        "ssl_key_pem": leaf.private_key_pem.bytes().decode(),
    })
    assert status == 201, host
    assert host["ssl_cert_id"] and host["serving_certificate"]["step"] == "host_binding"
    assert "PRIVATE KEY" not in json.dumps(host)
    assert served(world, "inline.example.com")["names"] == ["inline.example.com"]
    status, error = world["admin"].call("POST", "/hosts", {
        "domain": "bad.example.com", "upstream": world["upstream"], "ssl_mode": "custom",
        "ssl_cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
        "ssl_key_pem": leaf.private_key_pem.bytes().decode(),
    })
    assert status == 400 and error["error"]["field"] == "domains"
    assert world["admin"].call("GET", "/hosts")[0] == 200


def test_unknown_host_and_deleted_host_are_404(world: dict[str, Any]) -> None:
    admin = world["admin"]
    status, host = admin.call("POST", "/hosts", {"domain": "gone.example.com",
                                                 "upstream": world["upstream"]})
    assert status == 201
    assert admin.call("DELETE", f"/hosts/{host['id']}")[0] == 204
    plain = http.client.HTTPConnection("127.0.0.1", world["aegis"].ports["HTTP listener"],
                                       timeout=10)
    plain.request("GET", "/", headers={"Host": "gone.example.com"})
    response = plain.getresponse()
    assert response.status == 404 and b"Traceback" not in response.read()
    assert admin.call("GET", f"/hosts/{host['id']}")[0] == 404




def test_public_https_port_names_the_port_clients_dial(tmp_path: Path) -> None:
    """Behind port mapping (Docker ``-p 443:8443``) redirects must name the public port,
    not the listener's; 443 is left out of the URL."""
    aegis = AegisProcess(tmp_path, env={"AEGIS_PUBLIC_HTTPS_PORT": "443",
                                        "AEGIS_ACME_DIRECTORY": "https://127.0.0.1:9/dir"})
    aegis.start(expect=("HTTP listener", "HTTPS listener", "admin listener"))
    try:
        status, _ = Admin(aegis).call("POST", "/hosts", {
            "domain": "mapped.example.com", "upstream": "http://127.0.0.1:9",
            "force_https": True,
        })
        assert status == 201
        plain = http.client.HTTPConnection("127.0.0.1", aegis.ports["HTTP listener"], timeout=10)
        plain.request("GET", "/x?y", headers={"Host": "mapped.example.com"})
        response = plain.getresponse()
        assert response.status == 301
        assert response.getheader("Location") == "https://mapped.example.com/x?y"
    finally:
        assert aegis.stop() == 0
