"""A test ACME front: a real Pebble's directory plus ARI (RFC 9773) and ``meta.profiles``.

Pebble 2.4 (what Debian ships) has neither ``renewalInfo`` nor profiles, and newer Pebbles
cannot be installed here. This front listens on its own HTTPS port and forwards every
request to Pebble unchanged, ``Host`` header included: Pebble builds every URL it hands out
(directory entries, ``Location``, order and authorisation URLs) from the request's host and
checks each JWS ``url`` against it, so the whole flow keeps going through the front and the
signatures stay valid. Only three things are its own:

* ``GET /dir`` gains ``renewalInfo`` (pointing here) and ``meta.profiles``;
* ``GET /renewal-info/<certID>`` answers with :attr:`AcmeFront.window` (or a per-certificate
  one from :attr:`AcmeFront.windows`) and ``Retry-After: retry_after``;
* every newOrder payload is decoded (not verified: Pebble does that) and kept in
  :attr:`AcmeFront.new_orders` (those the CA created), so tests can see ``replaces`` and
  ``profile``.

Pebble ignores fields it does not know (``replaces``, ``profile``), so orders still issue.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IOpenSSLContextFactory
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from aegis.sources.acme.account import acme_http_client, read_ca_bundle

log = Logger()

PROFILES = {
    "classic": "90-day certificates for servers and clients (Let's Encrypt's default)",
    "tlsserver": "90-day certificates for TLS servers only",
    "shortlived": "6-day certificates; IP addresses allowed",
}
RENEWAL_INFO_PATH = "/renewal-info/"
HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                         b"proxy-connection", b"upgrade", b"te", b"trailer"})


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _payload(body: bytes) -> Any:
    """The JWS payload of a flattened-JSON ACME request (None for POST-as-GET)."""
    try:
        encoded = json.loads(body)["payload"]
        if not encoded:
            return None
        return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, KeyError, TypeError):
        return None


class AcmeFront(Resource):
    """See the module docstring. ``upstream`` is Pebble's base URL (``https://host:port``)
    and ``ca_bundle`` what trusts it; ``profiles`` None leaves ``meta.profiles`` out."""

    isLeaf = True

    def __init__(self, reactor: Any, upstream: str, ca_bundle: Path,
                 profiles: dict[str, str] | None = PROFILES, renewal_info: bool = True) -> None:
        super().__init__()
        self._reactor = reactor
        self._upstream = upstream.rstrip("/")
        self._http = acme_http_client(reactor, read_ca_bundle(ca_bundle))
        self.profiles = profiles
        self.renewal_info = renewal_info
        self.window: tuple[datetime, datetime] | None = None
        self.windows: dict[str, tuple[datetime, datetime]] = {}
        self.retry_after: int | None = 21600
        self.new_orders: list[Any] = []
        self.renewal_info_requests: list[str] = []
        self._new_order_path = "/order-plz"

    def render(self, request: Request) -> Any:
        path = request.uri.decode("latin-1")
        if request.method == b"GET" and path.startswith(RENEWAL_INFO_PATH) and self.renewal_info:
            return self._renewal_info(request, path[len(RENEWAL_INFO_PATH):])
        body = request.content.read() if request.content is not None else b""
        Deferred.fromCoroutine(self._forward(request, path, body))
        return NOT_DONE_YET

    def _renewal_info(self, request: Request, cert_id: str) -> bytes:
        self.renewal_info_requests.append(cert_id)
        window = self.windows.get(cert_id, self.window)
        request.setHeader(b"content-type", b"application/json")
        if window is None:
            request.setResponseCode(404)
            return json.dumps({"type": "urn:ietf:params:acme:error:malformed",
                               "detail": "no renewal information for this certificate"}).encode()
        if self.retry_after is not None:
            request.setHeader(b"retry-after", str(self.retry_after).encode())
        start, end = window
        return json.dumps({"suggestedWindow": {"start": _iso(start), "end": _iso(end)}}).encode()

    def _directory(self, request: Request, body: bytes) -> bytes:
        try:
            document = json.loads(body)
        except ValueError:
            return body
        if not isinstance(document, dict):
            return body
        new_order = document.get("newOrder")
        if isinstance(new_order, str) and "/" in new_order.split("//", 1)[-1]:
            self._new_order_path = "/" + new_order.split("//", 1)[-1].split("/", 1)[1]
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        if self.renewal_info:
            document["renewalInfo"] = f"https://{host}{RENEWAL_INFO_PATH.rstrip('/')}"
        if self.profiles is not None:
            document.setdefault("meta", {})["profiles"] = dict(self.profiles)
        return json.dumps(document).encode()

    async def _forward(self, request: Request, path: str, body: bytes) -> None:
        headers = {name: values for name, values in request.requestHeaders.getAllRawHeaders()
                   if name.lower() not in HOP_HEADERS}
        try:
            response = await self._http.request(
                request.method.decode(), self._upstream + path, headers=headers,
                data=body if body else None)
            content = await response.content()
        except Exception as exc:
            log.info("acme_front_upstream_failed path={path} error={error}", path=path,
                     error=type(exc).__name__)
            request.setResponseCode(502)
            request.finish()
            return
        if request.method == b"GET" and path == "/dir" and response.code == 200:
            content = self._directory(request, content)
        if request.method == b"POST" and path == self._new_order_path and response.code == 201:
            # Only orders the CA created: a newOrder refused for a bad nonce (Pebble
            # rejects 5%) is sent again by the client and must not count twice.
            self.new_orders.append(_payload(body))
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in HOP_HEADERS:
                request.responseHeaders.setRawHeaders(name, values)
        request.setHeader(b"content-length", str(len(content)).encode())
        if not request.finished and not request._disconnected:
            request.write(content)
            request.finish()


@implementer(IOpenSSLContextFactory)
class _ServerContext:
    """A server context with one certificate (what ``listenSSL`` needs: ``getContext``)."""

    def __init__(self, cert_pem: Path, key_pem: Path) -> None:
        self._context = SSL.Context(SSL.TLS_METHOD)
        self._context.set_min_proto_version(SSL.TLS1_2_VERSION)
        self._context.use_certificate(x509.load_pem_x509_certificates(cert_pem.read_bytes())[0])
        key = serialization.load_pem_private_key(key_pem.read_bytes(), None)
        self._context.use_privatekey(key)  # type: ignore[arg-type]

    def getContext(self) -> SSL.Context:
        return self._context


def listen_front(reactor: Any, front: AcmeFront, cert_pem: Path, key_pem: Path,
                 port: int = 0) -> IListeningPort:
    """Serve ``front`` over HTTPS on 127.0.0.1 (Pebble's own certificate serves)."""
    listening: IListeningPort = reactor.listenSSL(
        port, Site(front), _ServerContext(cert_pem, key_pem), interface="127.0.0.1")
    return listening


__all__ = ["PROFILES", "AcmeFront", "listen_front"]
