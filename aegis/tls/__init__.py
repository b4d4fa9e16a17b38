"""TLS termination: the policy every context follows, SNI certificate selection, and the
HTTPS listener's connection creator. See docs/tls.md.

* :mod:`aegis.tls.policy` — Mozilla "intermediate" contexts; single-certificate listeners.
* :mod:`aegis.tls.selection` — the spec's selection order as an immutable, swappable table.
* :mod:`aegis.tls.sni` — the servername callback; :func:`https_factory` (Twisted's TLS).
* :mod:`aegis.tls.direct` — TLS on the socket: the HTTPS listener's transport.
* :mod:`aegis.tls.port` — the HTTPS listener's listening port (accept, start the handshake).
* :mod:`aegis.tls.socket_tls` — OpenSSL connections and C callbacks without pyOpenSSL's
  per-connection object.
* :mod:`aegis.tls.endpoint` — :func:`https_endpoint`, the HTTPS listener's endpoint.
* :mod:`aegis.tls.transport` — handshake deadline; :func:`connection_info` for the HTTP layer.
"""

from aegis.tls.endpoint import https_endpoint
from aegis.tls.policy import (
    INTERMEDIATE,
    TLS13_ONLY,
    TLSPolicy,
    single_certificate_factory,
)
from aegis.tls.selection import (
    CertificateLookup,
    MemoryCertificates,
    Selection,
    SelectionState,
    SelectionTable,
)
from aegis.tls.sni import https_factory
from aegis.tls.transport import TLSConnectionInfo, connection_info

__all__ = [
    "INTERMEDIATE",
    "TLS13_ONLY",
    "CertificateLookup",
    "MemoryCertificates",
    "Selection",
    "SelectionState",
    "SelectionTable",
    "TLSConnectionInfo",
    "TLSPolicy",
    "connection_info",
    "https_endpoint",
    "https_factory",
    "single_certificate_factory",
]
