"""Where each request goes: the proxy engine's :class:`~aegis.proxy.routing.Router` for hosts.

Rules, in order (plain HTTP on port 80):

1. ``/.well-known/acme-challenge/...`` → the ACME HTTP-01 answer or 404 — never redirected,
   never proxied, whatever the host's settings;
2. an unknown ``Host`` → a plain 404 page;
3. ``force_https`` → 301 to the same host, path and query on HTTPS;
4. otherwise the host's upstream, without HSTS (never sent over HTTP).

HTTPS (port 443):

1. an unknown ``Host`` → 404;
2. a ``Host`` of one configured host arriving on a connection whose SNI named another
   configured host with a *different* certificate → 421 Misdirected Request (the client
   reused a connection it should not have, or is probing);
3. otherwise the host's upstream, with ``Strict-Transport-Security`` when enabled.

Everything is answered from memory: the host table is swapped whole by :meth:`update`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from twisted.logger import Logger

from aegis.hosts.upstream import parse_upstream
from aegis.interfaces import IChallengeResponder
from aegis.names import normalise_sni
from aegis.proxy.routing import ConnectionInfo, Forward, Headers, LocalResponse, RequestHead
from aegis.sources.acme.http01 import CONTENT_TYPE, challenge_response, is_challenge_path
from aegis.store.records import HostRecord
from aegis.tls.selection import SelectionSource

log = Logger()

_TEXT = (b"content-type", b"text/plain; charset=utf-8")
NOT_FOUND = LocalResponse(404, [_TEXT, (b"cache-control", b"no-store")],
                          b"404 Not Found: no proxy host is configured for this name.\n")
MISDIRECTED = LocalResponse(421, [_TEXT],
                            b"421 Misdirected Request: this connection was set up for another "
                            b"host; open a new connection for this one.\n")


def hsts_value(host: HostRecord) -> bytes | None:
    if not host.hsts_enabled:
        return None
    value = f"max-age={host.hsts_max_age}"
    if host.hsts_include_subdomains:
        value += "; includeSubDomains"
    if host.hsts_preload:
        value += "; preload"
    return value.encode("ascii")


def _forwards(host: HostRecord) -> tuple[Forward, Forward]:
    """(plain-HTTP forward, HTTPS forward) of ``host``: they differ only in HSTS."""
    upstream = parse_upstream(host.upstream)
    plain = Forward(
        host=upstream.host, port=upstream.port, scheme=upstream.scheme,
        verify_tls=host.upstream_tls_verify,
    )
    hsts = hsts_value(host)
    extra: Headers = [(b"strict-transport-security", hsts)] if hsts else []
    secure = Forward(
        host=upstream.host, port=upstream.port, scheme=upstream.scheme,
        verify_tls=host.upstream_tls_verify, response_headers=extra,
    )
    return plain, secure


class HostRouter:
    """Routes requests by ``Host`` using the current selection table's host index.

    ``https_port`` tells the port HTTPS redirects point at (omitted when 443);
    ``challenges`` answers ACME HTTP-01 (None: every challenge path is a 404).
    """

    def __init__(
        self,
        selection: SelectionSource,
        https_port: Callable[[], int | None],
        challenges: IChallengeResponder | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._selection = selection
        self._https_port = https_port
        self._challenges = challenges
        self._now = now
        self._forwards: Mapping[int, tuple[Forward, Forward]] = MappingProxyType({})

    def update(self, hosts: Iterable[HostRecord]) -> None:
        """Precompute every host's forwards; called whenever hosts change."""
        self._forwards = MappingProxyType({host.id: _forwards(host) for host in hosts})

    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward | LocalResponse:
        if conn.scheme == "http" and is_challenge_path(head.target):
            return self._challenge(head)
        table = self._selection.current()
        host = table.host_for(head.host) if head.host else None
        forwards = self._forwards.get(host.id) if host is not None else None
        if host is None or forwards is None:
            return NOT_FOUND
        if conn.scheme == "http":
            if host.force_https:
                return self._redirect(head)
            return forwards[0]
        if conn.sni is not None:
            sni = normalise_sni(conn.sni)
            if sni is not None and sni != head.host and table.host_for(sni) is not host:
                now = self._now()
                wanted = table.select(head.host, now).certificate
                if table.select(sni, now).certificate is not wanted:
                    return MISDIRECTED
        return forwards[1]

    def _challenge(self, head: RequestHead) -> LocalResponse:
        if self._challenges is None:
            return NOT_FOUND
        status, body = challenge_response(head.method, head.target, self._challenges, head.host)
        if status != 200:
            return LocalResponse(404, [_TEXT], b"Not Found\n")
        return LocalResponse(200, [(b"content-type", CONTENT_TYPE.encode("ascii"))], body)

    def _redirect(self, head: RequestHead) -> LocalResponse:
        port = self._https_port()
        authority = head.host if port in (None, 443) else f"{head.host}:{port}"
        location = b"https://" + authority.encode("ascii", "replace")
        location += head.target if head.target.startswith(b"/") else b"/"
        return LocalResponse(301, [(b"location", location), _TEXT])
