"""The harness for the certificate API tests: the routes of aegis.admin._certificates served
by real twisted.web resources in memory (StubTreq) over the SQLite and memory stores. Every
response is checked for key material as it arrives (and kept for a final check)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from aegis.admin import AdminAddress, AdminContext, TokenVerifier, api_class
from aegis.admin._certificates import routes
from aegis.admin._guards import token_digest
from aegis.certs.registry import CertificateRegistry
from aegis.certs.service import CertificateService
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.localca import LocalAuthority, LocalCA, admin_certificate_names
from aegis.store._runner import immediate_runner
from aegis.store.memory import MemoryStore
from aegis.store.sqlite import SQLiteStore
from tests.test_certs_helpers import NOW, Pair

TOKEN = "certificates-test-token-0123456789"
BASE = "https://127.0.0.1:9443"
SPEC_FIELDS = {"id", "domains", "source", "issuer", "expires_at", "auto_renew", "created_at"}
EXTRA_FIELDS = {
    "not_before",
    "subject",
    "fingerprint_sha256",
    "key_type",
    "chain_complete",
    "days_remaining",
    "status",
    "hosts",
    "problem",
    "lifecycle",
    "retired",
}
CertificatesAPI = api_class([routes], "CertificatesAPI")

# Every response body of this module, and every key we sent: checked at the end.
BODIES: list[bytes] = []
SECRETS: set[bytes] = set()


@dataclass(frozen=True)
class CertContext(AdminContext):
    """AdminContext plus the field the lead adds to it (see the report)."""

    certificates: CertificateService | None = None


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> LocalAuthority:
    return LocalCA(tmp_path_factory.mktemp("ca")).ensure(
        admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC)
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred did not fire"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def exchange(
    stub: StubTreq, method: str, path: str, headers: dict[str, str], data: bytes | None
) -> tuple[int, bytes]:
    """One request through ``stub``: its status and body, checked for key material."""
    d = stub.request(method, BASE + path, headers=headers, data=data)
    stub.flush()
    response = result_of(d)
    content = stub.content(response)
    stub.flush()
    payload: bytes = result_of(content)
    BODIES.append(payload)
    assert_no_secret(payload)
    return int(response.code), payload


class Api:
    def __init__(self, store: Any, authority: LocalAuthority, path: Path | None) -> None:
        self.store, self.path = store, path
        self.clock = Clock()
        self.clock.advance(NOW.timestamp())
        wrapper = KeyWrapper(MasterKey.generate())
        self.wrapper = wrapper
        self.registry = CertificateRegistry(store, wrapper, self.clock)
        self.registry.load_blocking()
        service = CertificateService(store, wrapper, self.registry, self.clock)
        context = CertContext(
            store=store, wrapper=wrapper, local_ca=authority, clock=self.clock, certificates=service
        )
        api = CertificatesAPI(
            context, TokenVerifier(token_digest(TOKEN)), AdminAddress(None, lambda: 9443)
        )
        self.stub = StubTreq(api.resource())

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if isinstance(body, dict) and isinstance(body.get("key_pem"), str):
            remember_key(body["key_pem"])
        code, payload = exchange(self.stub, method, path, headers, data)
        return code, json.loads(payload) if payload else None

    def upload(self, pair: Pair, **extra: Any) -> dict[str, Any]:
        code, body = self.call(
            "POST",
            "/api/v1/certificates",
            {"cert_pem": pair.cert_pem, "key_pem": pair.key_pem, **extra},
        )
        assert code == 201, body
        return dict(body)

    def count(self) -> int:
        return len(self.store.transact_blocking(lambda t: t.list_certificates()))


def private_bytes(text: str, passphrase: bytes | None = None) -> bytes:
    """The secret number of a key (EC scalar, RSA d, Ed25519 seed), big-endian."""
    key = serialization.load_pem_private_key(text.encode(), passphrase)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(32, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        d = key.private_numbers().d
        return d.to_bytes((d.bit_length() + 7) // 8, "big")
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def remember_key(text: str) -> None:
    """Note what would betray a key in a response: its PEM body and its secret number."""
    lines = [line for line in text.splitlines() if line and not line.startswith("-----")]
    body = "".join(line for line in lines if ":" not in line)
    if len(body) > 100:
        SECRETS.add(body[48:96].encode())
    try:
        secret = private_bytes(text)
    except (ValueError, TypeError):
        return  # encrypted or malformed: its PEM body is already remembered
    SECRETS.update({secret.hex().encode(), base64.b64encode(secret)[:-4]})


def assert_no_secret(payload: bytes) -> None:
    assert b"PRIVATE KEY" not in payload
    for secret in SECRETS:
        assert secret not in payload


@pytest.fixture(params=["sqlite", "memory"])
def api(request: pytest.FixtureRequest, tmp_path: Path, authority: LocalAuthority) -> Iterator[Api]:
    if request.param == "sqlite":
        path = tmp_path / "aegis.db"
        store: Any = SQLiteStore.open(path, immediate_runner)
    else:
        path, store = None, MemoryStore()
    yield Api(store, authority, path)
    store.close()


def error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}
    return dict(body["error"])
