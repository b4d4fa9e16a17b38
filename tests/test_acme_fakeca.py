"""A small in-memory ACME CA (a twisted.web Resource) and the client tests that need it.

Pebble cannot produce ``rateLimited``, Retry-After, scripted 5xx or a wrong certificate, so
this fake does: it speaks enough RFC 8555 to issue (directory, nonces, accounts, orders,
authorisations, HTTP-01 checked against the responder, finalize, download) and records every
request with the fake clock's time. Driven through ``StubTreq`` and a ``Clock``: no sockets,
no sleeping. Other ``test_acme_*`` modules import :class:`FakeCA` and :func:`drive` from here.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from aegis.crypto.keys import build_csr, generate_private_key
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.sources.acme._client import AcmeClient
from aegis.sources.acme._transport import (
    AcmeProblem,
    AcmeRateLimited,
    AcmeTransport,
    AcmeUnavailable,
    RetryPolicy,
)
from aegis.sources.acme.account import StoreAccountBook, load_or_create_account_key
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.sources.acme.issuer import AcmeIssuer, CertificateMismatch
from aegis.store.memory import MemoryStore

BASE = "https://ca.test"
ERR = "urn:ietf:params:acme:error:"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Scripted:
    """Answer the next request whose path starts with ``prefix`` with this, once."""

    prefix: str
    status: int
    problem: str = "serverInternal"
    headers: dict[str, str] = field(default_factory=dict)


class FakeCA(Resource):
    isLeaf = True

    def __init__(self, clock: Clock, responder: ChallengeResponder | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.responder = responder
        self.ids = itertools.count(1)
        self.nonces: set[str] = set()
        self.accounts: set[str] = set()
        self.orders: dict[str, dict[str, Any]] = {}
        self.authzs: dict[str, dict[str, Any]] = {}
        self.certs: dict[str, bytes] = {}
        self.log: list[tuple[float, str, str]] = []
        self.script: list[Scripted] = []
        self.reject_nonces = 0
        self.orders_created = 0
        self.validate = True
        self.tamper: Callable[[bytes], bytes] | None = None
        self.hold: str | None = None  # never answer requests to this path prefix
        # ARI (RFC 9773): when set, the directory lists renewalInfo and every certificate
        # gets this window (ISO strings) with ``ari_retry_after`` as its Retry-After.
        self.ari_window: tuple[str, str] | None = None
        self.ari_retry_after: str | None = None
        self.ari_windows: dict[str, tuple[str, str]] = {}  # per ARI id, over ari_window
        self.new_orders: list[dict[str, Any]] = []  # every newOrder payload, in order
        self.profiles: dict[str, str] | None = None  # meta.profiles when set
        self.held: list[Request] = []
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake ACME CA")])
        now = datetime.now(UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=900))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )

    def requests(self, prefix: str) -> list[tuple[float, str, str]]:
        return [entry for entry in self.log if entry[2].startswith(prefix)]

    # plumbing

    def _nonce(self, request: Request) -> None:
        nonce = _b64(next(self.ids).to_bytes(4, "big") + b"nonce")
        self.nonces.add(nonce)
        request.setHeader(b"replay-nonce", nonce.encode())

    def _json(
        self,
        request: Request,
        status: int,
        body: Any,
        location: str | None = None,
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        if location:
            request.setHeader(b"location", location.encode())
        return json.dumps(body).encode()

    def _problem(
        self,
        request: Request,
        status: int,
        code: str,
        detail: str = "",
        headers: dict[str, str] | None = None,
    ) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/problem+json")
        for key, value in (headers or {}).items():
            request.setHeader(key.encode(), value.encode())
        return json.dumps({"type": ERR + code, "detail": detail or code}).encode()

    def render(self, request: Request) -> bytes:
        path = request.path.decode()
        method = request.method.decode()
        self.log.append((self.clock.seconds(), method, path))
        self._nonce(request)
        if self.hold is not None and path.startswith(self.hold):
            self.held.append(request)
            return NOT_DONE_YET  # type: ignore[no-any-return]
        for entry in self.script:
            if path.startswith(entry.prefix):
                self.script.remove(entry)
                return self._problem(request, entry.status, entry.problem, headers=entry.headers)
        if path in ("/dir", "/dir-other"):  # two directory URLs: "another CA" for tests
            directory = {
                "newNonce": BASE + "/nonce",
                "newAccount": BASE + "/acct",
                "newOrder": BASE + "/order",
                "revokeCert": BASE + "/revoke",
                "keyChange": BASE + "/key",
            }
            if self.ari_window is not None:
                directory["renewalInfo"] = BASE + "/renewal-info"
            if self.profiles is not None:
                directory["meta"] = {"profiles": self.profiles}
            return self._json(request, 200, directory)
        if path.startswith("/renewal-info/") and self.ari_window is not None:
            if self.ari_retry_after is not None:
                request.setHeader(b"retry-after", self.ari_retry_after.encode())
            start, end = self.ari_windows.get(path.rsplit("/", 1)[1], self.ari_window)
            return self._json(request, 200, {"suggestedWindow": {"start": start, "end": end}})
        if path == "/nonce":
            request.setResponseCode(200 if method == "HEAD" else 204)
            return b""
        jws = json.loads(request.content.read())
        protected = json.loads(_unb64(jws["protected"]))
        payload = json.loads(_unb64(jws["payload"])) if jws["payload"] else None
        if protected.get("nonce") not in self.nonces:
            return self._problem(request, 400, "badNonce", "unknown nonce")
        self.nonces.discard(protected["nonce"])
        if self.reject_nonces:
            self.reject_nonces -= 1
            return self._problem(request, 400, "badNonce", "rejected for testing")
        if path == "/acct":
            account = f"{BASE}/acct/{next(self.ids)}"
            self.accounts.add(account)
            return self._json(request, 201, {"status": "valid"}, account)
        if protected.get("kid") not in self.accounts:
            return self._problem(request, 400, "accountDoesNotExist", "no such account")
        return self._account_request(request, path, payload)

    def _account_request(self, request: Request, path: str, payload: Any) -> bytes:
        if path == "/order":
            self.new_orders.append(payload)
            self.orders_created += 1
            ident = str(next(self.ids))
            authzs = []
            for identifier in payload["identifiers"]:
                authz_id = str(next(self.ids))
                self.authzs[authz_id] = {
                    "identifier": identifier,
                    "status": "pending",
                    "token": _b64(authz_id.encode().rjust(24, b"0")),
                }
                authzs.append(f"{BASE}/authz/{authz_id}")
            self.orders[ident] = {
                "status": "pending",
                "identifiers": payload["identifiers"],
                "authorizations": authzs,
                "finalize": f"{BASE}/finalize/{ident}",
            }
            return self._json(request, 201, self.orders[ident], f"{BASE}/order/{ident}")
        kind, _, ident = path.strip("/").partition("/")
        if kind == "order":
            order = self.orders[ident]
            if order["status"] == "pending" and any(  # RFC 8555 7.1.6: a failed authz
                self.authzs[u.rsplit("/", 1)[1]]["status"] == "invalid"
                for u in order["authorizations"]
            ):
                order["status"] = "invalid"
            if order["status"] == "pending" and all(
                self.authzs[u.rsplit("/", 1)[1]]["status"] == "valid"
                for u in order["authorizations"]
            ):
                order["status"] = "ready"
            return self._json(request, 200, order)
        if kind == "authz":
            authz = self.authzs[ident]
            chall = {
                "type": "http-01",
                "url": f"{BASE}/chall/{ident}",
                "token": authz["token"],
                "status": authz["status"],
            }
            return self._json(
                request,
                200,
                {
                    "identifier": authz["identifier"],
                    "status": authz["status"],
                    "challenges": [chall],
                },
            )
        if kind == "chall":
            authz = self.authzs[ident]
            ok = self.validate and (
                self.responder is None
                or self.responder.key_authorization(authz["token"]) is not None
            )
            authz["status"] = "valid" if ok else "invalid"
            return self._json(
                request,
                200,
                {
                    "type": "http-01",
                    "status": "processing",
                    "url": f"{BASE}/chall/{ident}",
                    "token": authz["token"],
                },
            )
        if kind == "finalize":
            return self._finalize(request, ident, payload)
        if kind == "cert":
            request.setHeader(b"content-type", b"application/pem-certificate-chain")
            chain = self.certs[ident]
            return self.tamper(chain) if self.tamper else chain
        return self._problem(request, 404, "malformed", "no such resource")

    def _finalize(self, request: Request, ident: str, payload: Any) -> bytes:
        order = self.orders[ident]
        csr = x509.load_der_x509_csr(_unb64(payload["csr"]))
        names = [i["value"] for i in order["identifiers"]]
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.certs[ident] = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (leaf, self.ca_cert)
        )
        order.update(status="valid", certificate=f"{BASE}/cert/{ident}")
        return self._json(request, 200, order)


@dataclass
class Rig:
    clock: Clock
    ca: FakeCA
    stub: StubTreq
    store: MemoryStore
    wrapper: KeyWrapper
    client: AcmeClient
    transport: AcmeTransport
    responder: ChallengeResponder
    issuer: AcmeIssuer


def make_rig(policy: RetryPolicy | None = None, start: float | None = None) -> Rig:
    clock = Clock()
    clock.advance(start if start is not None else datetime.now(UTC).timestamp())
    store = MemoryStore()
    wrapper = KeyWrapper(MasterKey.generate())
    responder = ChallengeResponder(store, lambda: datetime.fromtimestamp(clock.seconds(), UTC))
    ca = FakeCA(clock, responder)
    stub = StubTreq(ca)
    key = store.transact_blocking(lambda t: load_or_create_account_key(t, wrapper))
    transport = AcmeTransport(
        clock, stub, key, policy or RetryPolicy(backoff_base=1.0), clock.seconds
    )
    client = AcmeClient(transport, key, BASE + "/dir", "ops@example.com", StoreAccountBook(store))
    issuer = AcmeIssuer(clock, client, responder)
    return Rig(clock, ca, stub, store, wrapper, client, transport, responder, issuer)


def drive(rig: Rig, d: Deferred[Any], limit: float = 10_000.0, step: float = 0.05) -> Any:
    """Pump the stub HTTP and move the clock until ``d`` fires; return its result."""
    results: list[Any] = []
    d.addBoth(results.append)
    waited = 0.0
    while not results:
        rig.stub.flush()
        if results:
            break
        if waited > limit:
            raise AssertionError("the operation never finished")
        rig.clock.advance(step)
        waited += step
    rig.stub.flush()
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def _issue(rig: Rig, name: str = "a.example.com") -> bytes:
    key = generate_private_key()
    return drive(rig, rig.issuer.issue(build_csr(key, [name]), [name]))  # type: ignore[no-any-return]


def test_issues_a_certificate() -> None:
    rig = make_rig()
    chain = _issue(rig)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["a.example.com"]
    assert rig.ca.orders_created == 1
    assert len(rig.ca.requests("/acct")) == 1
    # challenge answers are withdrawn after the order
    assert rig.store.transact_blocking(lambda t: t.list_acme_challenges()) == []


def test_bad_nonce_retried_with_fresh_nonce() -> None:
    rig = make_rig()
    rig.ca.reject_nonces = 7
    _issue(rig)
    assert rig.ca.orders_created == 1


def test_bad_nonce_gives_up_after_bound() -> None:
    rig = make_rig(RetryPolicy(bad_nonce_attempts=3))
    rig.ca.reject_nonces = 100
    with pytest.raises(AcmeProblem) as info:
        _issue(rig)
    assert info.value.code == "badNonce"
    assert len(rig.ca.requests("/acct")) == 3


def test_lost_account_registered_again_once() -> None:
    rig = make_rig()
    _issue(rig)
    rig.ca.accounts.clear()  # the CA forgot us (Pebble restart)
    _issue(rig, "b.example.com")
    assert len(rig.ca.requests("/acct")) == 2
    url = rig.store.transact_blocking(lambda t: t.get_setting(f"acme_account_url:{BASE}/dir"))
    assert url in rig.ca.accounts


def test_server_errors_retried_with_backoff_then_succeed() -> None:
    rig = make_rig(RetryPolicy(backoff_base=2.0))
    rig.ca.script += [Scripted("/order", 500), Scripted("/order", 502)]
    _issue(rig)
    times = [t for t, m, p in rig.ca.requests("/order") if p == "/order"]
    assert len(times) == 3
    assert times[1] - times[0] >= 2.0 and times[2] - times[1] >= 4.0


def test_server_down_gives_unavailable_after_bounded_retries() -> None:
    rig = make_rig(RetryPolicy(transient_attempts=3, backoff_base=1.0))
    rig.ca.script += [Scripted("/dir", 500) for _ in range(10)]
    with pytest.raises(AcmeUnavailable):
        _issue(rig)
    assert len(rig.ca.requests("/dir")) == 3


def test_short_retry_after_is_waited_out() -> None:
    rig = make_rig()
    rig.ca.script.append(Scripted("/order", 503, "rateLimited", {"Retry-After": "20"}))
    _issue(rig)
    times = [t for t, m, p in rig.ca.requests("/order") if p == "/order"]
    assert len(times) == 2
    assert times[1] - times[0] >= 20.0


def test_long_rate_limit_blocks_every_request_until_retry_after() -> None:
    rig = make_rig()
    rig.ca.script.append(Scripted("/order", 429, "rateLimited", {"Retry-After": "3600"}))
    start = rig.clock.seconds()
    with pytest.raises(AcmeRateLimited) as info:
        _issue(rig)
    assert info.value.retry_at >= start + 3600
    before = len(rig.ca.log)
    with pytest.raises(AcmeRateLimited):
        _issue(rig, "b.example.com")
    assert len(rig.ca.log) == before  # nothing sent while blocked
    rig.clock.advance(3601)
    _issue(rig, "b.example.com")


def test_http_date_retry_after() -> None:
    rig = make_rig()
    when = datetime.fromtimestamp(rig.clock.seconds() + 7200, UTC)
    stamp = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    rig.ca.script.append(Scripted("/order", 429, "rateLimited", {"Retry-After": stamp}))
    with pytest.raises(AcmeRateLimited) as info:
        _issue(rig)
    assert abs(info.value.retry_at - (rig.clock.seconds() + 7200)) < 5


def test_validation_failure_reported() -> None:
    rig = make_rig()
    rig.ca.validate = False
    with pytest.raises(Exception, match=r"validation of a\.example\.com failed"):
        _issue(rig)


def test_wrong_names_from_ca_rejected() -> None:
    rig = make_rig()
    other = make_rig()
    foreign = _issue(other, "evil.example.com")
    rig.ca.tamper = lambda chain: foreign
    with pytest.raises(CertificateMismatch):
        _issue(rig)


def test_wrong_key_from_ca_rejected() -> None:
    rig = make_rig()
    other = make_rig()
    foreign = _issue(other, "a.example.com")  # right name, someone else's key
    rig.ca.tamper = lambda chain: foreign
    with pytest.raises(CertificateMismatch, match="public key"):
        _issue(rig)


def test_problem_messages_carry_no_secrets() -> None:
    rig = make_rig()
    rig.ca.script.append(Scripted("/order", 400, "malformed"))
    with pytest.raises(AcmeProblem) as info:
        _issue(rig)
    text = str(info.value)
    assert "malformed" in text and "PRIVATE" not in text
