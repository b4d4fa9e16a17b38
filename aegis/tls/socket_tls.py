"""OpenSSL server connections on a socket without pyOpenSSL's per-connection object.

Why
===
The HTTPS listener makes one OpenSSL connection per accepted socket. pyOpenSSL's
``SSL.Connection`` costs about twice OpenSSL's own ``SSL_new`` in Python: it registers the
connection in a class-wide ``WeakValueDictionary`` (so that its callback wrappers can find the
Python object again) and sets up state for features a server on a socket BIO never uses. On
the handshake benchmark that was the largest Python cost left per connection.

:class:`SocketTLS` holds the ``SSL*`` itself. The two callbacks a handshake runs are
installed as plain C callbacks instead of pyOpenSSL's wrappers:

* ALPN (:func:`install_alpn`): the choice depends only on the offered list, so one callback
  per list of our protocols serves every context, for pyOpenSSL connections too.
* TLS-ALPN-01 (RFC 8737) rides on the ALPN callback: a ClientHello offering exactly
  ``acme-tls/1`` for a name with a published challenge gets ``acme-tls/1`` and that
  name's challenge certificate, set on the connection (:func:`add_acme_tls_lookup`; the
  ACME source publishes, memory only). Any other ClientHello costs one falsy check.
* SNI: :class:`~aegis.tls.sni.SNIConnectionCreator` installs its own and finds the
  connection through :class:`HandshakeRegistry` (a plain dict keyed by the ``SSL*``, holding
  connections only while they handshake).

A context given to :class:`SocketTLS` must not carry pyOpenSSL-wrapped callbacks (they look
connections up in pyOpenSSL's registry and would fail closed): the contexts of
:mod:`aegis.tls.policy` do not.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto
from OpenSSL._util import exception_from_error_queue
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

_NULL = _ffi.NULL
_ALPN_OK = _lib.SSL_TLSEXT_ERR_OK
_ALPN_NOACK = _lib.SSL_TLSEXT_ERR_NOACK
_ALPN_SIGNATURE = ("int (*)(SSL *, const unsigned char **, unsigned char *, "
                   "const unsigned char *, unsigned int, void *)")
_SERVERNAME_SIGNATURE = "int (*)(SSL *, int *, void *)"
_HOST_NAME = _lib.TLSEXT_NAMETYPE_host_name

# Callbacks live as long as the process: a context may outlive any one owner.
_alpn_callbacks: dict[tuple[bytes, ...], Any] = {}

ACME_TLS_1 = b"acme-tls/1"
_ACME_TLS_ONLY = bytes([len(ACME_TLS_1)]) + ACME_TLS_1  # the whole offered list, on the wire
#: ``lookup(raw SNI) -> (X509*, EVP_PKEY*) | None``: TLS-ALPN-01 challenge certificates.
AcmeTLSLookup = Callable[[bytes | None], "tuple[Any, Any] | None"]
_acme_tls_lookups: list[AcmeTLSLookup] = []


def add_acme_tls_lookup(lookup: AcmeTLSLookup) -> Callable[[], None]:
    """Answer ``acme-tls/1`` handshakes from ``lookup`` (memory only: it runs inside the
    handshake); returns the function that removes it. The pointers it returns must stay
    alive while published (the owner keeps their pyOpenSSL objects)."""
    _acme_tls_lookups.append(lookup)

    def remove() -> None:
        if lookup in _acme_tls_lookups:
            _acme_tls_lookups.remove(lookup)

    return remove


def _acme_tls_answer(ssl: Any) -> bool:
    """Set the challenge certificate of this handshake's SNI, if one is published."""
    name = server_name(ssl)
    for lookup in _acme_tls_lookups:
        found = lookup(name)
        if found is not None:
            certificate, key = found
            if (_lib.SSL_use_certificate(ssl, certificate) == 1
                    and _lib.SSL_use_PrivateKey(ssl, key) == 1):
                return True
            _lib.ERR_clear_error()
            return False
    return False


def install_alpn(context: SSL.Context, ours: tuple[bytes, ...]) -> None:
    """Have ``context`` agree on the first of ``ours`` (our order of preference) that the
    client offers; a client offering none of them gets no ALPN answer (``NOACK``), as
    nginx does."""
    callback = _alpn_callbacks.get(ours)
    if callback is None:
        callback = _alpn_callbacks[ours] = _ffi.callback(
            _ALPN_SIGNATURE, _alpn_selector(ours), error=_lib.SSL_TLSEXT_ERR_ALERT_FATAL)
    _lib.SSL_CTX_set_alpn_select_cb(context._context, callback, _NULL)


def _alpn_selector(ours: tuple[bytes, ...]) -> Callable[..., int]:
    def select(_ssl: Any, out: Any, outlen: Any, offered: Any, length: int, _arg: Any) -> int:
        wire = _ffi.buffer(offered, length)[:]
        if _acme_tls_lookups and wire == _ACME_TLS_ONLY and _acme_tls_answer(_ssl):
            out[0] = offered + 1
            outlen[0] = len(ACME_TLS_1)
            return int(_ALPN_OK)
        offsets: dict[bytes, int] = {}
        at = 0
        while at < length:  # a list of length-prefixed protocol names
            size = wire[at]
            offsets.setdefault(wire[at + 1:at + 1 + size], at + 1)
            at += 1 + size
        for protocol in ours:
            found = offsets.get(protocol)
            if found is not None and found + len(protocol) <= length:
                out[0] = offered + found  # points into the ClientHello, as OpenSSL allows
                outlen[0] = len(protocol)
                return int(_ALPN_OK)
        return int(_ALPN_NOACK)

    return select


def install_servername(context: SSL.Context, callback: Callable[[Any, Any, Any], int]) -> Any:
    """Have ``context`` call ``callback(ssl, alert, arg)`` (OpenSSL's servername callback
    signature; return 0) once it has parsed the ClientHello's SNI.

    Exceptions are the callback's own business (it must catch them); the handshake goes on
    with whatever context the connection then has. Returns the C callback, which the caller
    keeps alive as long as the context."""
    c_callback = _ffi.callback(_SERVERNAME_SIGNATURE, callback, error=0)
    _lib.SSL_CTX_set_tlsext_servername_callback(context._context, c_callback)
    return c_callback


def server_name(ssl: Any) -> bytes | None:
    """The SNI value OpenSSL parsed for ``ssl`` (an ``SSL*``), or None."""
    name = _lib.SSL_get_servername(ssl, _HOST_NAME)
    return None if name == _NULL else _ffi.string(name)


class HandshakeRegistry:
    """Socket connections in their handshake, by ``SSL*``: how a C callback finds them."""

    def __init__(self) -> None:
        # Public for the hot path: the SNI callback looks up ``by_ssl.get`` directly.
        self.by_ssl: dict[Any, SocketTLS] = {}

    def add(self, connection: SocketTLS) -> None:
        self.by_ssl[connection.ssl] = connection

    def remove(self, connection: SocketTLS) -> None:
        self.by_ssl.pop(connection.ssl, None)


class SocketTLS:
    """A server-side OpenSSL connection on a socket descriptor (OpenSSL's socket BIO).

    ``transport`` is where the SNI layer records its facts (``tls_info``). Offers what the
    HTTP layer reads from ``getHandle()``: :meth:`get_servername` and
    :meth:`get_alpn_proto_negotiated`.
    """

    __slots__ = ("_context", "_registry", "ssl", "transport")

    def __init__(self, context: SSL.Context, descriptor: int, transport: Any,
                 registry: HandshakeRegistry | None = None) -> None:
        context._used = True  # as pyOpenSSL marks it: settings are fixed from now on
        ssl = _lib.SSL_new(context._context)
        if ssl == _NULL:
            exception_from_error_queue(SSL.Error)
        self.ssl = _ffi.gc(ssl, _lib.SSL_free)
        self._context = context  # the SSL_CTX's callbacks live on this object
        self.transport = transport
        self._registry = registry
        _lib.SSL_set_fd(ssl, descriptor)
        _lib.SSL_set_accept_state(ssl)
        if registry is not None:
            registry.add(self)

    def handshake_over(self) -> None:
        """Done or failed: no callback will look for this connection any more.

        Also lets go of the transport, which holds this object: without that reference
        cycle, the ``SSL*`` is freed as soon as the connection is gone, not at the next
        garbage collection (measured: the delayed frees cost the allocator several per
        cent of a handshake)."""
        if self._registry is not None:
            self._registry.remove(self)
            self._registry = None
        self.transport = None

    def set_context(self, context: SSL.Context) -> None:
        """Serve this handshake from ``context`` (the SNI switch)."""
        _lib.SSL_set_SSL_CTX(self.ssl, context._context)
        self._context = context

    def get_servername(self) -> bytes | None:
        return server_name(self.ssl)

    def get_alpn_proto_negotiated(self) -> bytes:
        data = _ffi.new("unsigned char **")
        length = _ffi.new("unsigned int *")
        _lib.SSL_get0_alpn_selected(self.ssl, data, length)
        return b"" if not length[0] else _ffi.buffer(data[0], length[0])[:]

    def get_peer_certificate(self) -> crypto.X509 | None:
        """Always None in practice: the listener asks no client certificates."""
        certificate = _lib.SSL_get_peer_certificate(self.ssl)  # a new reference
        if certificate == _NULL:
            return None
        return crypto.X509._from_raw_x509_ptr(certificate)

    def error(self, result: int, code: int) -> Exception:
        """The exception pyOpenSSL would raise for a failed call that returned ``result``,
        ``code`` being its ``SSL_get_error`` (called before anything can change ``errno``);
        clears OpenSSL's queue. pyOpenSSL's own mapping is a method of its ``Connection``,
        which these connections are not."""
        saved_errno = _ffi.errno
        if code == _lib.SSL_ERROR_SYSCALL and _lib.ERR_peek_error() == 0:
            if result < 0 and saved_errno:
                return SSL.SysCallError(saved_errno, errno.errorcode.get(saved_errno, ""))
            return SSL.SysCallError(-1, "Unexpected EOF")
        if code == _lib.SSL_ERROR_ZERO_RETURN:
            return SSL.ZeroReturnError()
        try:
            exception_from_error_queue(SSL.Error)
        except SSL.Error as failed:
            return failed
        return SSL.Error(f"TLS failure (OpenSSL error {code})")


__all__ = ["ACME_TLS_1", "HandshakeRegistry", "SocketTLS", "add_acme_tls_lookup", "install_alpn",
           "install_servername", "server_name"]
