"""The least Python can do per TLS handshake: a reference point, not a server to use.

``python bench/handshake/floor_server.py PORT CERT.pem KEY.pem`` accepts connections in a bare
epoll loop and drives OpenSSL through the same binding and the same policy context as Aegis
(:func:`aegis.tls.policy.policy_context`: Mozilla intermediate, session cache, ALPN as a C
callback), with the certificate set on that one context: no Twisted, no SNI selection, no
protocol, no deadline. It answers the peer's ``close_notify`` as Aegis does.

``run.py --floor`` measures it beside Aegis, nginx and Caddy. Aegis / floor is the share of a
handshake that is Aegis's own Python; floor / nginx is what this OpenSSL build costs against
the system one nginx links (they differ: ``cryptography`` bundles its own).
"""

from __future__ import annotations

import select
import socket
import sys
from typing import Any

from OpenSSL._util import ffi, lib

from aegis.tls.policy import INTERMEDIATE, policy_context

_BUFFER_SIZE = 17 * 1024


def serve(port: int, cert: str, key: str) -> None:
    context = policy_context(INTERMEDIATE)
    context.use_certificate_chain_file(cert)
    context.use_privatekey_file(key)
    raw_context = context._context
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, list[Any]] = {}  # fd -> [socket, SSL*, handshaking]
    buffer = ffi.new("char[]", _BUFFER_SIZE)
    want_read = lib.SSL_ERROR_WANT_READ
    print("ready", flush=True)
    while True:
        for fd, _event in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        accepted, _address = listener.accept()
                    except BlockingIOError:
                        break
                    accepted.setblocking(False)
                    ssl = lib.SSL_new(raw_context)
                    lib.SSL_set_fd(ssl, accepted.fileno())
                    lib.SSL_set_accept_state(ssl)
                    connections[accepted.fileno()] = [accepted, ssl, True]
                    poller.register(accepted.fileno(), select.EPOLLIN)
                continue
            state = connections[fd]
            accepted, ssl, handshaking = state
            if handshaking:
                result = lib.SSL_do_handshake(ssl)
                if result == 1:
                    state[2] = False
                    continue
                if lib.SSL_get_error(ssl, result) == want_read:
                    continue
            else:
                count = lib.SSL_read(ssl, buffer, _BUFFER_SIZE)
                if count > 0:
                    continue
                error = lib.SSL_get_error(ssl, count)
                if error == want_read:
                    continue
                if error == lib.SSL_ERROR_ZERO_RETURN:
                    lib.SSL_shutdown(ssl)  # answer the close_notify, as Aegis does
            lib.ERR_clear_error()
            poller.unregister(fd)
            del connections[fd]
            lib.SSL_free(ssl)
            accepted.close()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
