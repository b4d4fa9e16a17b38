"""Upload, list, show, replace and delete with ``curl`` over real TLS on a loopback port,
as in the spec's examples (issue 4 acceptance). Real reactor; port 0."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet.utils import getProcessOutputAndValue

from aegis.admin import AdminAddress, TokenVerifier, admin_site
from aegis.admin._guards import token_digest
from aegis.admin._service import ADMIN_TLS_POLICY
from aegis.certs.registry import CertificateRegistry
from aegis.certs.service import CertificateService
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.localca import CA_CERT_FILE, LocalCA, admin_certificate_names
from aegis.store._runner import immediate_runner
from aegis.store.sqlite import SQLiteStore
from aegis.tls.policy import single_certificate_factory
from tests.test_certs_api_harness import CertContext, CertificatesAPI
from tests.test_certs_helpers import trustme_pair

TOKEN = "curl-test-token-abcdefghijklmnop"
CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest_twisted.ensureDeferred
async def test_curl_lifecycle(tmp_path: Path) -> None:
    from twisted.internet import reactor

    store = SQLiteStore.open(tmp_path / "data" / "aegis.db", immediate_runner)
    authority = LocalCA(tmp_path / "ssl").ensure(
        admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC)
    )
    wrapper = KeyWrapper(MasterKey.generate())
    registry = CertificateRegistry(store, wrapper, reactor)
    registry.load_blocking()
    service = CertificateService(store, wrapper, registry, reactor)
    context = CertContext(
        store=store, wrapper=wrapper, local_ca=authority, clock=reactor, certificates=service
    )
    listening: list[Any] = []
    api = CertificatesAPI(
        context,
        TokenVerifier(token_digest(TOKEN)),
        AdminAddress(None, lambda: listening[0].getHost().port),
    )
    factory = single_certificate_factory(
        authority.admin, admin_site(api, reactor), reactor, policy=ADMIN_TLS_POLICY
    )
    listening.append(reactor.listenTCP(0, factory, interface="127.0.0.1"))
    base = f"https://127.0.0.1:{listening[0].getHost().port}/api/v1/certificates"
    ca_file = str(tmp_path / "ssl" / CA_CERT_FILE)

    async def curl(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        args = [
            "-sS",
            "--cacert",
            ca_file,
            "-X",
            method,
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "-w",
            "\n%{http_code}",
        ]
        if body is not None:
            payload = tmp_path / "body.json"
            payload.write_text(json.dumps(body))
            args += ["-H", "Content-Type: application/json", "--data-binary", f"@{payload}"]
        out, err, code = await getProcessOutputAndValue(CURL, [*args, url])
        assert code == 0, err
        text, _, status = out.decode().rpartition("\n")
        assert b"PRIVATE KEY" not in out
        return int(status), json.loads(text) if text else None

    try:
        ca = trustme.CA()
        pair = trustme_pair(ca, "app.example.com")
        status, created = await curl(
            "POST",
            base,
            {
                "domains": ["app.example.com"],
                "cert_pem": pair.cert_pem,
                "key_pem": pair.key_pem,
            },
        )
        assert status == 201 and created["domains"] == ["app.example.com"]
        status, listed = await curl("GET", base)
        assert status == 200 and [c["id"] for c in listed] == [created["id"]]
        status, shown = await curl("GET", f"{base}/{created['id']}")
        assert status == 200 and shown["chain_pem"] == pair.cert_pem
        renewed = trustme_pair(ca, "app.example.com")
        status, replaced = await curl(
            "PUT",
            f"{base}/{created['id']}",
            {
                "cert_pem": renewed.cert_pem,
                "key_pem": renewed.key_pem,
            },
        )
        assert status == 200 and replaced["fingerprint_sha256"] != created["fingerprint_sha256"]
        status, _ = await curl("DELETE", f"{base}/{created['id']}")
        assert status == 204
        status, listed = await curl("GET", base)
        assert status == 200 and listed == []
    finally:
        await listening[0].stopListening()
        store.close()
