"""Metrics and health of a running ``aegis run`` after real traffic, parsed with
``prometheus_client.parser``: every series of docs/monitoring.md with real values, on the
admin listener (token) and on ``AEGIS_METRICS_LISTEN`` (plain)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.aegis_process import AegisProcess
from tests.test_hosts_loopback import Admin, Upstream

pytestmark = pytest.mark.slow


def https_get(port: int, sni: str, path: str = "/") -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                          server_hostname=sni)
    connection.request("GET", path, headers={"Host": sni})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(found: dict[Any, float], metric_name: str, **labels: str) -> float:
    return sum(value for (metric, have), value in found.items() if metric == metric_name
               and all(dict(have).get(k) == v for k, v in labels.items()))


def test_metrics_and_health_of_a_running_aegis(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    aegis = AegisProcess(tmp_path, env={
        "AEGIS_ACME_DIRECTORY": "https://127.0.0.1:9/dir",
        "AEGIS_METRICS_LISTEN": "tcp:0:interface=127.0.0.1",
    })
    aegis.start(expect=("HTTP listener", "HTTPS listener", "admin listener",
                        "metrics listener"))
    try:
        admin = Admin(aegis)
        leaf = trustme.CA().issue_cert("app.example.com")
        status, cert = admin.call("POST", "/certificates", {
            "cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
            "key_pem": leaf.private_key_pem.bytes().decode()})
        assert status == 201, cert
        status, host = admin.call("POST", "/hosts", {
            "domain": "app.example.com", "ssl_mode": "custom", "ssl_cert_id": cert["id"],
            "upstream": f"http://127.0.0.1:{upstream.server_address[1]}"})
        assert status == 201, host
        status, down = admin.call("POST", "/hosts", {
            "domain": "down.example.com", "upstream": "http://127.0.0.1:9"})
        assert status == 201, down
        https = aegis.ports["HTTPS listener"]
        assert [https_get(https, "app.example.com") for _ in range(5)] == [200] * 5
        assert https_get(https, "down.example.com") == 502
        with pytest.raises(ssl.SSLError):
            https_get(https, "bad\x01name.example.com")

        context = ssl.create_default_context(cafile=str(admin.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", admin.port, context=context)
        connection.request("GET", "/metrics")
        refused = connection.getresponse()
        refused.read()
        assert refused.status == 401
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {admin.token}"})
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        found = samples(response.read().decode())
        plain = urllib.request.urlopen(
            f"http://127.0.0.1:{aegis.ports['metrics listener']}/metrics", timeout=10)
        assert total(samples(plain.read().decode()), "aegis_certificate_ready_status") >= 1

        ident = {"id": str(cert["id"]), "source": "custom", "name": "app.example.com"}
        assert total(found, "aegis_certificate_expiration_timestamp_seconds", **ident) > 1e9
        assert total(found, "aegis_certificate_ready_status", **ident) == 1
        assert total(found, "aegis_certificate_level", **ident) == 0
        assert total(found, "certmanager_certificate_expiration_timestamp_seconds") > 0
        assert total(found, "aegis_certificate_renewal_timestamp_seconds", id="local:proxy") > 0
        assert total(found, "aegis_tls_handshakes_total", step="host_binding") >= 5
        assert total(found, "aegis_tls_handshakes_total", step="fallback") >= 1
        assert total(found, "aegis_tls_handshake_failures_total", reason="sni_invalid") >= 0
        assert total(found, "aegis_proxy_requests_total", host="app.example.com",
                     code_class="2xx") == 5
        assert total(found, "aegis_proxy_requests_total", host="down.example.com",
                     code_class="5xx") == 1
        assert total(found, "aegis_proxy_upstream_latency_seconds_count") == 5
        assert total(found, "aegis_proxy_upstream_latency_seconds_bucket", le="+Inf") == 5
        assert total(found, "aegis_listener_up", listener="https") == 1
        assert total(found, "aegis_store_writable") == 1
        assert total(found, "aegis_monitor_checks_total") >= 1
        assert total(found, "process_cpu_seconds_total") > 0
        assert total(found, "process_resident_memory_bytes") > 0

        context = ssl.create_default_context(cafile=str(admin.ca))
        connection = http.client.HTTPSConnection("127.0.0.1", admin.port, context=context)
        connection.request("GET", "/api/v1/health")
        health = connection.getresponse()
        body = json.loads(health.read())
        assert health.status == 200 and body["status"] == "ok"
        assert body["listeners"] == {"admin": True, "http": True, "https": True,
                                     "metrics": True}
        assert "app.example.com" not in json.dumps(body)
    finally:
        assert aegis.stop() == 0
        upstream.shutdown()
    text = aegis.text()
    assert "Traceback" not in text and admin.token not in text
