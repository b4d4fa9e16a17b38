"""How a listening port turns an accepted socket into a server-side TLS connection.

:class:`TLSAcceptor` is what :class:`aegis.tls.port.DirectTLSPort` asks for each accepted
socket; :func:`context_acceptor` builds one that serves every connection from one context
(tests, benchmarks, tools), and :meth:`aegis.tls.sni.SNIConnectionCreator.socket_connection`
is the HTTPS listener's, with SNI selection. Kept apart from :mod:`aegis.tls.direct`, the
transport, which re-exports these names.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IReactorTime

from aegis.tls.socket_tls import SocketTLS
from aegis.tls.transport import DEFAULT_HANDSHAKE_TIMEOUT


@dataclass(frozen=True)
class TLSAcceptor:
    """How a listening port turns an accepted socket into a TLS server connection.

    ``connection(sock, transport)`` returns a :class:`SocketTLS` bound to ``sock`` (in
    accept state, with ``transport`` as its app data); ``clock`` runs the handshake deadline;
    ``counters`` (the metrics) count handshakes that time out or fail.
    """

    connection: Callable[[socket.socket, Any], SocketTLS]
    clock: IReactorTime
    handshake_timeout: float
    counters: Any = None


def server_connection(context: SSL.Context, sock: socket.socket,
                      transport: object) -> SocketTLS:
    """A server-side connection on ``sock`` itself (OpenSSL's socket BIO) for ``transport``
    (where an SNI layer records ``tls_info``), from a context without SNI selection."""
    return SocketTLS(context, sock.fileno(), transport)


def context_acceptor(context: SSL.Context, clock: IReactorTime,
                     handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> TLSAcceptor:
    """An acceptor serving every connection from one ``context`` (no SNI selection): for
    tests, benchmarks and tools that need the transport without the certificate layer.

    ``context`` must not carry pyOpenSSL-wrapped callbacks (they cannot find socket
    connections, see :mod:`aegis.tls.socket_tls`): build it with
    :func:`aegis.tls.policy.policy_context`, or use ``install_alpn``.
    """
    for helper in ("_alpn_select_helper", "_tlsext_servername_callback", "_verify_helper"):
        if getattr(context, helper, None) is not None:
            raise ValueError(
                f"this context has a pyOpenSSL callback ({helper.strip('_')}), which cannot "
                "serve TLS on the socket; use aegis.tls.policy.policy_context or "
                "aegis.tls.socket_tls.install_alpn")
    return TLSAcceptor(partial(server_connection, context), clock, handshake_timeout)


__all__ = ["TLSAcceptor", "context_acceptor", "server_connection"]
