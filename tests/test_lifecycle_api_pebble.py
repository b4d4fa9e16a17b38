"""Fault 1 of issue 14 as a user meets it, against a real ACME server (Pebble): `aegis run`,
a `letsencrypt` host, its certificate deleted through the API. Without force the delete is
refused naming the host and the step (autocert); with ``?force=true`` it is deleted and a
new order gets a new certificate that real TLS clients are then served."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from pathlib import Path

import pytest

from aegis.testing.pebble import PebbleServer, pebble_available
from tests.aegis_process import AegisProcess
from tests.test_acme_e2e import api, start_aegis
from tests.test_acme_e2e import pebble as pebble  # the fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not pebble_available(), reason="pebble is not installed"),
]

NAME = "gone.example.test"


def served_fingerprint(aegis: AegisProcess, root: Path) -> str | None:
    """SHA-256 of the leaf served for NAME, if it verifies against Pebble's root."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection(("127.0.0.1", aegis.ports["HTTPS listener"]), 5) as raw, \
                context.wrap_socket(raw, server_hostname=NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError:
        return None
    return None if der is None else hashlib.sha256(der).hexdigest()


def wait_for_served(aegis: AegisProcess, root: Path, not_this: str | None) -> str:
    deadline = time.monotonic() + 60
    while True:
        found = served_fingerprint(aegis, root)
        if found is not None and found != not_this:
            return found
        assert time.monotonic() < deadline, aegis.text()[-3000:]
        time.sleep(0.3)


def test_deleting_a_served_lets_encrypt_certificate(tmp_path: Path,
                                                    pebble: PebbleServer) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    workdir = tmp_path / "aegis"
    workdir.mkdir()
    aegis = start_aegis(workdir, pebble)
    try:
        status, host = api(aegis, "POST", "/hosts", {
            "domain": NAME, "upstream": "http://127.0.0.1:9", "ssl_mode": "letsencrypt"})
        assert status == 201, host
        first = wait_for_served(aegis, root, None)
        status, listed = api(aegis, "GET", "/certificates")
        (old,) = [c for c in listed if c["fingerprint_sha256"] == first]
        assert old["hosts"] == [{"id": host["id"], "domain": NAME, "names": [NAME],
                                 "step": "autocert"}]
        assert old["lifecycle"]["status"] == "valid" and old["retired"] is False

        status, body = api(aegis, "DELETE", f"/certificates/{old['id']}")
        assert status == 409, body
        assert body["error"]["code"] == "certificate_in_use"
        assert body["error"]["hosts"] == [{"id": host["id"], "domain": NAME, "step": "autocert"}]
        assert f"{NAME} (host {host['id']}) by autocert" in body["error"]["message"]
        assert served_fingerprint(aegis, root) == first  # nothing changed

        orders = pebble.orders_created()
        status, body = api(aegis, "DELETE", f"/certificates/{old['id']}?force=true")
        assert status == 204, body
        second = wait_for_served(aegis, root, first)  # a new certificate, really served
        assert pebble.orders_created() > orders
        status, listed = api(aegis, "GET", "/certificates")
        assert old["id"] not in [c["id"] for c in listed]
        (new,) = [c for c in listed if c["fingerprint_sha256"] == second]
        assert new["hosts"][0]["step"] == "autocert" and new["lifecycle"]["status"] == "valid"
        status, shown = api(aegis, "GET", f"/hosts/{host['id']}")
        assert shown["serving_certificate"] == {
            "step": "autocert", "certificate_id": new["id"], "source": new["source"]}
        assert aegis.stop() == 0
        text = aegis.text()
        assert "event=cert_deleted" in text or "cert_deleted" in text
        assert "PRIVATE KEY" not in text
    finally:
        aegis.kill()
