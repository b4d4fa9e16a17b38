"""Run the Aegis proxy engine alone, in front of one upstream (benchmarks, RSS tests).

    python bench/proxy/run_proxy.py --upstream 127.0.0.1:8080 [--port 0] [--cert C --key K]

Prints ``LISTENING <port>`` once bound. With ``--cert``/``--key`` it listens with TLS
(ALPN h2 and http/1.1, TLS 1.2+), the way the HTTPS listener wraps the engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

if __name__ == "__main__" and os.environ.get("AEGIS_BENCH_REACTOR", "aegis") == "aegis":
    from aegis.reactor import install

    install()  # as `aegis run` does; AEGIS_BENCH_REACTOR=epoll measures Twisted's stock one

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.ssl import DefaultOpenSSLContextFactory

from aegis.proxy import proxy_factory
from aegis.proxy.routing import Forward, ProxyLimits, StaticRouter
from aegis.tls.direct import context_acceptor
from aegis.tls.port import DirectTLSPort
from aegis.tls.transport import TimedTLSFactory


def tls_context_factory(cert: str, key: str) -> DefaultOpenSSLContextFactory:
    def configure(context: SSL.Context) -> None:
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")

        def select(connection: SSL.Connection, offered: list[bytes]) -> Any:
            for proto in (b"h2", b"http/1.1"):
                if proto in offered:
                    return proto
            return SSL.NO_OVERLAPPING_PROTOCOLS

        context.set_alpn_select_callback(select)

    factory = DefaultOpenSSLContextFactory(key, cert, sslmethod=SSL.TLS_METHOD)
    configure(factory.getContext())
    return factory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--memory-tls", action="store_true",
                        help="Twisted's memory-BIO TLS protocol instead of TLS on the socket "
                             "(the admin listener's transport), for comparison")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    target = Forward(host, int(port))
    limits = ProxyLimits(access_log=not args.no_access_log)
    factory = proxy_factory(StaticRouter({}, default=target), reactor, limits)
    if args.cert and args.memory_tls:
        wrapped = TimedTLSFactory(tls_context_factory(args.cert, args.key),  # type: ignore[arg-type]
                                  factory, reactor, gather_writes=False)
        listening = reactor.listenTCP(args.port, wrapped, interface="127.0.0.1")
    elif args.cert:
        # the HTTPS listener's transport: TLS on the socket, handshake deadline
        acceptor = context_acceptor(tls_context_factory(args.cert, args.key).getContext(),
                                    reactor)
        listening: Any = DirectTLSPort(args.port, factory, 50, "127.0.0.1", reactor, acceptor)
        listening.startListening()
    else:
        listening = reactor.listenTCP(args.port, factory,  # type: ignore[arg-type]
                                      interface="127.0.0.1")
    sys.stdout.write(f"LISTENING {listening.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
