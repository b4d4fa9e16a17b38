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

from aegis.logs import AccessLog, BatchedLogFile
from aegis.proxy import proxy_factory
from aegis.proxy.routing import Forward, ProxyLimits, StaticRouter
from aegis.tls.direct import context_acceptor
from aegis.tls.policy import INTERMEDIATE, policy_context
from aegis.tls.port import DirectTLSPort
from aegis.tls.transport import TimedTLSFactory


def tls_context(cert: str, key: str) -> SSL.Context:
    """The HTTPS listener's policy (Mozilla intermediate, ALPN h2 and http/1.1)."""
    context = policy_context(INTERMEDIATE)
    context.use_certificate_chain_file(cert)
    context.use_privatekey_file(key)
    return context


class _ContextFactory:
    def __init__(self, context: SSL.Context) -> None:
        self._context = context

    def getContext(self) -> SSL.Context:
        return self._context


def tls_context_factory(cert: str, key: str) -> _ContextFactory:
    """:func:`tls_context` as a context factory (for Twisted's TLS protocol)."""
    return _ContextFactory(tls_context(cert, key))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--access-log", default="off",
                        help="a file, - (stdout) or off (default, as the peers are measured)")
    parser.add_argument("--access-log-format", default="combined")
    parser.add_argument("--memory-tls", action="store_true",
                        help="Twisted's memory-BIO TLS protocol instead of TLS on the socket "
                             "(the admin listener's transport), for comparison")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    target = Forward(host, int(port))
    access = None if args.access_log == "off" else AccessLog(
        BatchedLogFile(args.access_log, reactor), reactor, args.access_log_format)
    limits = ProxyLimits(access_log=None if access is None else access.record)
    factory = proxy_factory(StaticRouter({}, default=target), reactor, limits)
    if args.cert and args.memory_tls:
        wrapped = TimedTLSFactory(tls_context_factory(args.cert, args.key),  # type: ignore[arg-type]
                                  factory, reactor, gather_writes=False)
        listening = reactor.listenTCP(args.port, wrapped, interface="127.0.0.1")
    elif args.cert:
        # the HTTPS listener's transport: TLS on the socket, handshake deadline
        acceptor = context_acceptor(tls_context(args.cert, args.key), reactor)
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
