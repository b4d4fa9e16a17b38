"""Aegis's HTTPS TLS layer alone, for the handshake benchmark.

``python bench/handshake/aegis_server.py PORT CERT.pem KEY.pem NAME`` serves ``NAME`` with the
certificate through :func:`aegis.tls.endpoint.https_endpoint` (SNI selection, policy, handshake
deadline: the real listener's code path) in front of a tiny HTTP/1.1 responder, and prints
``ready`` once listening. This is the only place a benchmark imports the global reactor.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet.protocol import Factory, Protocol

from aegis.certs.model import LoadedCertificate
from aegis.listeners import GracefulListener
from aegis.store.records import HostRecord
from aegis.tls.endpoint import https_endpoint
from aegis.tls.selection import MemoryCertificates, SelectionState


class Hello(Protocol):
    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def loaded(cert_path: str, key_path: str, name: str, cert_id: int | None) -> LoadedCertificate:
    with open(cert_path, "rb") as handle:
        chain = tuple(x509.load_pem_x509_certificates(handle.read()))
    with open(key_path, "rb") as handle:
        key: Any = load_pem_private_key(handle.read(), None)
    return LoadedCertificate(
        id=cert_id, source="custom", names=(name,), leaf=chain[0], chain=chain, key=key,
        not_before=chain[0].not_valid_before_utc, not_after=chain[0].not_valid_after_utc)


def main(port: int, cert_path: str, key_path: str, name: str) -> None:
    if os.environ.get("AEGIS_BENCH_REACTOR", "aegis") == "aegis":
        from aegis.reactor import install

        install()  # as `aegis run` does; AEGIS_BENCH_REACTOR=epoll measures Twisted's own
    from twisted.internet import reactor

    bound = loaded(cert_path, key_path, name, 1)
    fallback = loaded(cert_path, key_path, name, None)
    now = datetime.now(UTC)
    host = HostRecord(id=1, domain=name, upstream="http://127.0.0.1:9", ssl_mode="custom",
                      ssl_cert_id=1, created_at=now, updated_at=now)
    state = SelectionState(MemoryCertificates([bound]), fallback, hosts=[host])
    endpoint = https_endpoint(reactor, f"tcp:{port}:interface=127.0.0.1:backlog=1024", state)
    # The listener service `aegis run` uses (connection tracking for graceful stops included).
    listener = GracefulListener(endpoint, Factory.forProtocol(Hello), reactor, 10.0,
                                "HTTPS listener", lambda why: sys.exit(why))
    listener.privilegedStartService()
    listener.startService()
    print("ready", flush=True)
    runner: Any = reactor
    runner.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
