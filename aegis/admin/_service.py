"""The admin listener: the admin API over TLS with the local CA's admin certificate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web.server import Site
from zope.interface import implementer

from aegis.admin._accesslog import admin_access_line
from aegis.admin._app import AdminAPI
from aegis.admin._channel import LimitedHTTPChannel
from aegis.admin._guards import AdminAddress, TokenVerifier, listen_address
from aegis.admin._limits import BodyLimitedRequest
from aegis.admin._routing import AdminContext
from aegis.certs.model import LoadedCertificate
from aegis.listeners import GracefulListener
from aegis.localca import LocalAuthority
from aegis.tls.policy import TLSPolicy, certificate_context
from aegis.tls.transport import TimedTLSFactory

#: HTTP/1.1 only: the body limit lives in the HTTP/1.1 request, and the API gains nothing
#: from HTTP/2.
ADMIN_TLS_POLICY = TLSPolicy(min_version="1.2", alpn=(b"http/1.1",))
#: Idle connections (and slow request heads) are closed after this many seconds.
ADMIN_IDLE_TIMEOUT = 30


@implementer(IOpenSSLServerConnectionCreator)
class AdminCertificateCreator:
    """Serves the admin certificate on every connection; :meth:`replace` swaps it (local CA
    maintenance re-issued it) for new connections without a restart."""

    def __init__(self, certificate: LoadedCertificate) -> None:
        self._context = certificate_context(certificate, ADMIN_TLS_POLICY)

    def replace(self, authority: LocalAuthority) -> None:
        self._context = certificate_context(authority.admin, ADMIN_TLS_POLICY)

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


def admin_site(api: AdminAPI, clock: IReactorTime) -> Site:
    """The HTTP layer: twisted.web with the proxy front's limits (head size, header
    deadline, streaming body limit, refusals that close: :mod:`aegis.admin._channel`) and
    no tracebacks. HTTP/1.1 only, so the channel is used directly, without twisted.web's
    HTTP/2 switch."""
    # parsePOSTFormSubmission=False: the API takes JSON only, and twisted.web would otherwise
    # parse (and answer malformed) form bodies itself, before the content-type guard.
    site = Site(api.resource(), timeout=ADMIN_IDLE_TIMEOUT, reactor=clock,
                parsePOSTFormSubmission=False, logFormatter=admin_access_line)
    site.protocol = LimitedHTTPChannel  # type: ignore[method-assign,assignment]
    site.requestFactory = BodyLimitedRequest
    site.displayTracebacks = False
    site.noisy = False
    return site


def build_admin_service(
    listen: str,
    context: AdminContext,
    verifier: TokenVerifier,
    reactor: Any,
    shutdown_timeout: float,
    fatal: Callable[[str], None],
    creator: AdminCertificateCreator | None = None,
) -> GracefulListener:
    """A :class:`GracefulListener` serving the admin API on ``listen`` over TLS.

    The Host guard learns the real port from the listening socket, so ``tcp:0`` works.
    Pass ``creator`` to keep a handle for swapping the certificate later.
    """
    interface, configured_port = listen_address(listen)
    listener: GracefulListener | None = None

    def port() -> int | None:
        if configured_port:
            return configured_port
        return listener.port_number() if listener is not None else None

    api = AdminAPI(context, verifier, AdminAddress(interface, port))
    creator = creator or AdminCertificateCreator(context.local_ca.admin)
    factory: IProtocolFactory = TimedTLSFactory(creator, admin_site(api, reactor), reactor)
    listener = GracefulListener(
        serverFromString(reactor, listen), factory, reactor, shutdown_timeout,
        "admin listener", fatal,
    )
    return listener
