"""A fake Cloudflare API v4 (Origin CA and certificate packs) on twisted.web, with its own CA.

Why ship it: users can try Aegis's Cloudflare features without an account, and tests drive
the real client over real HTTP. It follows ``cloudflare-subset.openapi.json``: success and
failure envelopes, both auth headers (a wrong credential is code 10000 with HTTP 400, as
Cloudflare answers), enum and limit checks, a wildcard only as one leading ``*.``, 1-100
Origin CA hostnames, at most 50 pack hosts including the zone apex. It signs CSRs with an
in-memory test CA (the stand-in for Cloudflare's Origin root) and can inject faults: HTTP
errors with codes and ``Retry-After``, the transient 1100, delays (for timeouts), and
certificates for other names or another key. Validation error codes other than 10000, 6003,
7003 and 1100 are the fake's own (Cloudflare does not document them).

Run it: ``python -m aegis.testing.cloudflare --port 8787`` prints the base URL, the test CA
file, an API token, a service key and a zone; point ``AEGIS_CLOUDFLARE_API_BASE`` at the URL.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import idna
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from aegis.sources.cloudflare.timefmt import format_go, format_rfc3339
from aegis.testing.origin_ca import FakeOriginCA

ORIGIN_VALIDITIES = (7, 30, 90, 365, 730, 1095, 5475)
REQUEST_TYPES = ("origin-rsa", "origin-ecc", "keyless-certificate")
PACK_VALIDITIES = {"lets_encrypt": (90,), "google": (14, 30, 90), "ssl_com": (14, 30, 90, 365)}
VALIDATION_METHODS = ("txt", "http", "email")
PACK_STATUSES = ("initializing", "pending_validation", "pending_issuance", "pending_deployment",
                 "active")
_PREFIX = "/client/v4"
_LABEL = "(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"


class _Reject(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) answering one matching request.

    ``delay`` seconds pass first; then ``status`` (with ``code``/``message`` in a failure
    envelope, or an HTML page when ``html``) and ``retry_after``; or ``certificate``
    ("wrong_names" / "wrong_key") spoils an otherwise good Origin CA answer.
    ``operation`` limits the fault to paths containing that text.
    """

    status: int | None = None
    code: int | None = None
    message: str = "Internal error"
    retry_after: str | None = None
    delay: float = 0.0
    certificate: str | None = None
    html: bool = False
    operation: str | None = None


@dataclass
class Exchange:
    """One request the fake received and what it answered (for schema checks in tests)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)


def _hostname(raw: object, *, field_name: str) -> str:
    """Cloudflare's rule: FQDN, IDN to punycode, wildcard only as one leading ``*.`` label."""
    if not isinstance(raw, str) or not raw:
        raise _Reject(400, 1001, f"{field_name}: every entry must be a non-empty string")
    wildcard, text = raw.startswith("*."), raw[2:] if raw.startswith("*.") else raw
    try:
        text = idna.encode(text, uts46=True).decode("ascii") if not text.isascii() else text
    except (idna.IDNAError, UnicodeError):
        raise _Reject(400, 1001, f"{field_name}: invalid hostname") from None
    text = text.lower()
    if not re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})+", text) or len(text) > 251:
        raise _Reject(400, 1001, f"{field_name}: invalid hostname {raw[:80]!r}")
    return f"*.{text}" if wildcard else text


class FakeCloudflare:
    """State and behaviour of the fake; :meth:`resource` is its twisted.web root."""

    def __init__(self, clock: IReactorTime, *, expires_on_format: str = "rfc3339",
                 long_ids: bool = False) -> None:
        self.clock = clock
        self.ca = FakeOriginCA(self.now())
        self.api_tokens: set[str] = set()
        self.service_keys: set[str] = set()
        self.zones: dict[str, str] = {}
        self.expires_on_format = expires_on_format
        self.long_ids = long_ids
        self.auto_advance = True
        self.faults: list[Fault] = []
        self.exchanges: list[Exchange] = []
        self.certificates: dict[str, dict[str, Any]] = {}
        self.packs: dict[str, dict[str, Any]] = {}

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def add_zone(self, name: str, zone_id: str | None = None) -> str:
        zone_id = zone_id or uuid.uuid4().hex
        self.zones[zone_id] = name.lower()
        return zone_id

    def inject(self, fault: Fault, times: int = 1) -> None:
        self.faults.extend([fault] * times)

    def resource(self) -> Resource:
        return _Root(self)

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, request: Request) -> int | bytes:
        path = (request.path or b"").decode("latin-1")
        method = (request.method or b"GET").decode("latin-1")
        body = request.content.read() if request.content is not None else b""
        exchange = Exchange(method, path, (request.uri or b"").partition(b"?")[2].decode("latin-1"),
                            {k.decode().lower(): v[0].decode("latin-1") for k, v in
                             request.requestHeaders.getAllRawHeaders()}, body)
        self.exchanges.append(exchange)
        fault = next((f for f in self.faults
                      if f.operation is None or f.operation in path), None)
        if fault is not None:
            self.faults.remove(fault)
        if fault is not None and fault.delay > 0:
            call = self.clock.callLater(fault.delay, self._answer_later, request, exchange, fault)
            request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
            return NOT_DONE_YET
        return self._answer(request, exchange, fault)

    def _answer_later(self, request: Request, ex: Exchange, fault: Fault) -> None:
        request.write(self._answer(request, ex, fault))
        request.finish()

    def _answer(self, request: Request, ex: Exchange, fault: Fault | None) -> bytes:
        headers = {"content-type": "application/json"}
        if fault is not None and fault.status is not None:
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            if fault.html:
                status, out = fault.status, b"<html><body>error</body></html>"
                headers["content-type"] = "text/html"
            else:
                status, out = fault.status, _failure(fault.code or 1000, fault.message)
        else:
            try:
                result = self._route(ex, fault)
                status = 200
                out = json.dumps({"success": True, "errors": [], "messages": [],
                                  "result": result}).encode()
            except _Reject as rej:
                status, out = rej.status, _failure(rej.code, rej.message)
        ex.status, ex.response, ex.response_headers = status, out, headers
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name, value)
        return out

    def _route(self, ex: Exchange, fault: Fault | None) -> Any:
        if not ex.path.startswith(_PREFIX + "/"):
            raise _Reject(404, 7000, "No route for that URI")
        parts = ex.path[len(_PREFIX) + 1:].split("/")
        if parts == ["certificates"] and ex.method == "POST":
            self._auth(ex, service_key=True)
            return self._create_origin(_json(ex.body), fault)
        if len(parts) == 2 and parts[0] == "certificates" and ex.method in ("GET", "DELETE"):
            self._auth(ex, service_key=True)
            cert = self.certificates.get(parts[1])
            if cert is None:
                raise _Reject(404, 1002, "Certificate not found")
            if ex.method == "DELETE":
                del self.certificates[parts[1]]
                return {"id": parts[1], "revoked_at": format_rfc3339(self.now())}
            return cert
        if len(parts) >= 4 and parts[0] == "zones" and parts[2:4] == ["ssl", "certificate_packs"]:
            self._auth(ex, service_key=False)
            zone = self.zones.get(parts[1])
            if zone is None:
                raise _Reject(400, 7003, f"Could not route to /zones/{parts[1][:40]}, perhaps "
                                         "your object identifier is invalid?")
            if parts[4:] == ["order"] and ex.method == "POST":
                return self._order_pack(parts[1], zone, _json(ex.body))
            if len(parts) == 5 and ex.method == "GET":
                return self._get_pack(parts[1], parts[4])
        raise _Reject(400, 7003, "No route for the URI")

    def _auth(self, ex: Exchange, *, service_key: bool) -> None:
        authz, key = ex.headers.get("authorization"), ex.headers.get("x-auth-user-service-key")
        if authz is not None:
            if not authz.startswith("Bearer ") or not authz[7:]:
                raise _Reject(400, 6003, "Invalid request headers")
            if authz[7:] in self.api_tokens:
                return
        elif key is not None and service_key and key in self.service_keys:
            return
        raise _Reject(400, 10000, "Authentication error")

    # -- Origin CA -------------------------------------------------------------------------

    def _create_origin(self, body: dict[str, Any], fault: Fault | None) -> dict[str, Any]:
        names = body.get("hostnames")
        if not isinstance(names, list) or not 1 <= len(names) <= 100:
            raise _Reject(400, 1001, "hostnames: between 1 and 100 hostnames are required")
        hostnames = [_hostname(n, field_name="hostnames") for n in names]
        request_type = body.get("request_type")
        if request_type not in REQUEST_TYPES:
            raise _Reject(400, 1001, "request_type: must be origin-rsa, origin-ecc or "
                                     "keyless-certificate")
        validity = body.get("requested_validity", 5475)
        if isinstance(validity, bool) or validity not in ORIGIN_VALIDITIES:
            raise _Reject(400, 1001, "requested_validity: must be one of 7, 30, 90, 365, 730, "
                                     "1095, 5475")
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
            valid = csr.is_signature_valid
        except ValueError:
            valid = False
        if not valid:
            raise _Reject(400, 1001, "csr: not a valid PEM certificate signing request")
        public_key: Any = csr.public_key()
        wanted = {"origin-rsa": rsa.RSAPublicKey, "origin-ecc": ec.EllipticCurvePublicKey}
        if request_type in wanted and not isinstance(public_key, wanted[request_type]):
            raise _Reject(400, 1001, f"csr: key type does not match request_type {request_type}")
        signed_names = list(hostnames)
        if fault is not None and fault.certificate == "wrong_names":
            signed_names = ["other.invalid-example.net"]
        if fault is not None and fault.certificate == "wrong_key":
            public_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        now = self.now()
        expires = now + timedelta(days=int(validity))
        cert_id = str(secrets.randbelow(9 * 10 ** (47 if self.long_ids else 31))
                      + 10 ** (47 if self.long_ids else 31))
        stamp = format_go(expires) if self.expires_on_format == "go" else format_rfc3339(expires)
        result = {"id": cert_id, "certificate": self.ca.sign(public_key, signed_names, now,
                                                             int(validity)),
                  "csr": body["csr"], "expires_on": stamp, "hostnames": hostnames,
                  "request_type": request_type, "requested_validity": validity}
        self.certificates[cert_id] = result
        return result

    # -- certificate packs -----------------------------------------------------------------

    def _order_pack(self, zone_id: str, zone: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("type") != "advanced":
            raise _Reject(400, 1001, "type: must be 'advanced'")
        hosts = body.get("hosts")
        if not isinstance(hosts, list) or not 1 <= len(hosts) <= 50:
            raise _Reject(400, 1001, "hosts: between 1 and 50 hosts are required")
        names = [_hostname(h, field_name="hosts") for h in hosts]
        if zone not in names:
            raise _Reject(400, 1001, f"hosts: must include the zone apex {zone}")
        stray = [n for n in names if n != zone and not n.endswith("." + zone)]
        if stray:
            raise _Reject(400, 1001, f"hosts: {stray[0]} is not in zone {zone}")
        authority, method = body.get("certificate_authority"), body.get("validation_method")
        if authority not in PACK_VALIDITIES:
            raise _Reject(400, 1001, "certificate_authority: must be lets_encrypt, google or "
                                     "ssl_com")
        if method not in VALIDATION_METHODS:
            raise _Reject(400, 1001, "validation_method: must be txt, http or email")
        days = body.get("validity_days")
        if isinstance(days, bool) or days not in (14, 30, 90, 365):
            raise _Reject(400, 1001, "validity_days: must be 14, 30, 90 or 365")
        if days not in PACK_VALIDITIES[authority]:
            raise _Reject(400, 1001, f"validity_days: {authority} issues for "
                                     f"{', '.join(map(str, PACK_VALIDITIES[authority]))} days")
        branding = body.get("cloudflare_branding", False)
        if not isinstance(branding, bool):
            raise _Reject(400, 1001, "cloudflare_branding: must be a boolean")
        pack_id = str(uuid.uuid4()) if self.long_ids else uuid.uuid4().hex
        pack = {"id": pack_id, "type": "advanced", "hosts": names, "status": "initializing",
                "validation_method": method, "validity_days": days,
                "certificate_authority": authority, "cloudflare_branding": branding}
        self.packs[pack_id] = {**pack, "zone_id": zone_id}
        return pack

    def _get_pack(self, zone_id: str, pack_id: str) -> dict[str, Any]:
        pack = self.packs.get(pack_id)
        if pack is None or pack["zone_id"] != zone_id:
            raise _Reject(404, 1002, "Certificate pack not found")
        if self.auto_advance and pack["status"] in PACK_STATUSES[:-1]:
            pack["status"] = PACK_STATUSES[PACK_STATUSES.index(pack["status"]) + 1]
        result = {k: v for k, v in pack.items() if k != "zone_id"}
        result["certificates"] = []
        if pack["status"] == "active":
            now = self.now()
            result["certificates"] = [{
                "id": uuid.uuid4().hex, "hosts": pack["hosts"], "status": "active",
                "issuer": {"lets_encrypt": "Let's Encrypt", "google": "Google Trust Services",
                           "ssl_com": "SSL.com"}[pack["certificate_authority"]],
                "signature": "ECDSAWithSHA256", "bundle_method": "ubiquitous",
                "expires_on": format_rfc3339(now + timedelta(days=pack["validity_days"])),
                "uploaded_on": format_rfc3339(now), "modified_on": format_rfc3339(now),
                "zone_id": zone_id, "priority": 1}]
        elif pack["status"] == "pending_validation":
            result["validation_records"] = [_validation_record(pack["validation_method"], h)
                                            for h in pack["hosts"]]
        return result


def _validation_record(method: str, host: str) -> dict[str, Any]:
    bare = host.removeprefix("*.")
    if method == "txt":
        return {"txt_name": f"_acme-challenge.{bare}", "txt_value": secrets.token_hex(16),
                "status": "pending"}
    if method == "http":
        token = secrets.token_hex(8)
        return {"http_url": f"http://{bare}/.well-known/pki-validation/{token}.txt",
                "http_body": secrets.token_hex(16), "status": "pending"}
    return {"emails": [f"administrator@{bare}", f"webmaster@{bare}"], "status": "pending"}


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise _Reject(400, 1001, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _Reject(400, 1001, "the request body must be a JSON object")
    return value


def _failure(code: int, message: str) -> bytes:
    return json.dumps({"success": False, "errors": [{"code": code, "message": message}],
                       "messages": [], "result": None}).encode()


class _Root(Resource):
    isLeaf = True

    def __init__(self, fake: FakeCloudflare) -> None:
        super().__init__()
        self._fake = fake

    def render(self, request: Request) -> int | bytes:
        return self._fake.handle(request)


def main(argv: list[str] | None = None) -> None:
    """``python -m aegis.testing.cloudflare``: run the fake until interrupted."""
    import argparse
    import sys
    import tempfile
    from pathlib import Path

    from twisted.internet import reactor as global_reactor
    from twisted.web.server import Site

    reactor: Any = global_reactor

    parser = argparse.ArgumentParser(description="Fake Cloudflare API for trying Aegis.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--token", default=None, help="API token to accept (default: random)")
    parser.add_argument("--service-key", default=None, help="Origin CA key to accept")
    parser.add_argument("--zone", default="example.com", help="zone apex to create")
    parser.add_argument("--zone-id", default="023e105f4ecef8ad9ca31a8372d0c353")
    parser.add_argument("--go-time", action="store_true", help="expires_on in Go's format")
    parser.add_argument("--ca-dir", default=None, help="where to write the test CA (PEM)")
    args = parser.parse_args(argv)
    fake = FakeCloudflare(reactor, expires_on_format="go" if args.go_time else "rfc3339")
    token = args.token or "fake-token-" + secrets.token_hex(12)
    key = args.service_key or "v1.0-fake-" + secrets.token_hex(16)
    fake.api_tokens.add(token)
    fake.service_keys.add(key)
    zone_id = fake.add_zone(args.zone, args.zone_id)
    ca_dir = Path(args.ca_dir or tempfile.mkdtemp(prefix="fake-cloudflare-"))
    ca_path = ca_dir / "fake-cloudflare-origin-ca.crt"
    ca_path.write_bytes(fake.ca.pem())
    port = reactor.listenTCP(args.port, Site(fake.resource()),
                             interface=args.interface)
    url = f"http://{args.interface}:{port.getHost().port}{_PREFIX}"
    sys.stdout.write(f"Fake Cloudflare API: {url}\nTest CA: {ca_path}\nAPI token: {token}\n"
                     f"Origin CA key: {key}\nZone {args.zone}: {zone_id}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
