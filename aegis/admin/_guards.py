"""Checks every admin request passes before a handler runs.

Listening on 127.0.0.1 is not protection: any web page the operator visits can make the
browser send requests there (CSRF), and a hostile DNS name can be pointed at 127.0.0.1
(DNS rebinding). So:

* exactly one ``Host``, naming the admin listener itself (``127.0.0.1:9443``, ``localhost:9443``,
  ``[::1]:9443`` or the configured bind address): a rebinding page sends its own name.
* an ``Origin`` header, when present, must be the admin origin (``https://`` + one of
  those): browsers send it on every cross-site request that could change state.
* a write carrying a body or a ``Content-Type`` must be ``application/json``: HTML forms
  cannot send that type without a CORS preflight, which we never grant.
* the bearer token (:class:`TokenVerifier`) on every route not marked public.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor
from twisted.web.iweb import IRequest

from aegis.admin._errors import ApiError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WRITE_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE")


def listen_address(description: str) -> tuple[str | None, int | None]:
    """``(interface, port)`` of a TCP endpoint description (None, None for others)."""
    endpoint = serverFromString(MemoryReactor(), description)
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    return (interface or None, port if isinstance(port, int) else None)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class AdminAddress:
    """The names the admin listener answers to. ``port`` is read per request, so a
    listener bound to port 0 (tests) is known once it listens."""

    bind: str | None
    port: Callable[[], int | None]

    def hosts(self) -> frozenset[str]:
        names = list(LOOPBACK_HOSTS)
        if self.bind and self.bind not in ("0.0.0.0", "::"):  # noqa: S104  # nosec B104 # compared
            names.append(_bracketed(self.bind.lower()))
        port = self.port()
        if port is None:
            return frozenset(names)
        allowed = {f"{name}:{port}" for name in names}
        if port == 443:
            allowed.update(names)
        return frozenset(allowed)

    def origins(self) -> frozenset[str]:
        return frozenset(f"https://{host}" for host in self.hosts())


def check_host_and_origin(request: IRequest, address: AdminAddress) -> None:
    hosts_sent = request.requestHeaders.getRawHeaders(b"host") or []
    if len(hosts_sent) > 1:
        # RFC 9112 3.2: more than one Host field is a 400; picking one of them would let a
        # proxy in front and this guard disagree about which name was asked for.
        raise ApiError(400, "duplicate_host", "the request carries more than one Host header",
                       "Host")
    host = (hosts_sent[0] if hosts_sent else b"").decode("latin-1").strip().lower()
    hosts = address.hosts()
    if host not in hosts:
        raise ApiError(403, "forbidden_host",
                       "the Host header does not name this admin listener")
    origins = request.requestHeaders.getRawHeaders(b"origin")
    if origins is not None and (
        len(origins) != 1 or origins[0].decode("latin-1").lower() not in address.origins()
    ):
        raise ApiError(403, "forbidden_origin", "cross-origin requests are not allowed")


def check_content_type(request: IRequest, body_length: int) -> None:
    if request.method not in WRITE_METHODS:
        return
    content_type = request.getHeader(b"content-type")
    if content_type is None and body_length == 0:
        return
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media != b"application/json":
        raise ApiError(415, "unsupported_media_type",
                       "writes must be sent as application/json")


def token_digest(token: str) -> str:
    """SHA-256 hex of a token: what the settings table keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenVerifier:
    """Checks ``Authorization: Bearer <token>`` against one SHA-256 digest.

    Comparing digests with :func:`hmac.compare_digest` takes the same time wherever the
    presented token differs, and the token itself is never kept in memory longer than the
    request that carried it.
    """

    def __init__(self, digest_hex: str) -> None:
        self._digest = bytes.fromhex(digest_hex)

    def __repr__(self) -> str:
        return "TokenVerifier(<hidden>)"

    def check(self, request: IRequest) -> None:
        header = request.getHeader(b"authorization")
        if header is None:
            raise ApiError(401, "unauthorized", "a bearer token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="aegis-admin"'})
        scheme, _, presented = header.partition(b" ")
        candidate = hashlib.sha256(presented.strip()).digest()
        good = hmac.compare_digest(candidate, self._digest)
        if scheme.lower() != b"bearer" or not good:
            raise ApiError(
                401, "invalid_token", "the bearer token is not valid",
                headers={"WWW-Authenticate":
                         'Bearer realm="aegis-admin", error="invalid_token"'},
            )
