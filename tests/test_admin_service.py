"""Start-up wiring: makeService ensures the local CA and token before the reactor runs, and
the "admin" listener serves the admin certificate + CA chain over TLS (handshake in memory)."""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from aegis.admin import AdminCertificateCreator
from aegis.localca import (
    ADMIN_BASENAME,
    CA_CERT_FILE,
    PROXY_BASENAME,
    LocalCA,
    LocalCAMaintenance,
    admin_certificate_names,
)
from aegis.service import AegisService
from aegis.tap import Options, makeService


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[AegisService, MemoryReactorClock, Path]]:
    reactor = MemoryReactorClock()
    reactor.advance(time.time())  # certificates are dated by the reactor's clock
    options = Options()
    options.parseOptions([
        "--data-dir", str(tmp_path / "data"), "--ssl-cache-dir", str(tmp_path / "ssl"),
        "--http-listen", "tcp:8080", "--https-listen", "tcp:8443",
        "--admin-listen", "tcp:9443:interface=127.0.0.1",
    ])
    root = makeService(options, reactor)  # type: ignore[arg-type]
    yield root, reactor, tmp_path
    root.getServiceNamed("store-close").stopService()


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            b"GET /api/v1/settings/admin-trust-bundle HTTP/1.1\r\n"
            b"Host: localhost:9443\r\nConnection: close\r\n\r\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


def handshake(reactor: MemoryReactorClock, ca_pem: bytes, hostname: str) -> Collect:
    port, factory, _, interface = reactor.tcpServers[-1]
    assert (port, interface) == (9443, "127.0.0.1")
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    collect = Collect()
    client_factory = TLSMemoryBIOFactory(
        optionsForClientTLS(hostname, trustRoot=Certificate.loadPEM(ca_pem)),
        True, Factory.forProtocol(lambda: collect), clock=reactor,
    )
    client = client_factory.buildProtocol(None)
    pump = iosim.connect(
        server, iosim.FakeTransport(server, isServer=True),
        client, iosim.FakeTransport(client, isServer=False),
        greet=False, clock=reactor,
    )
    for _ in range(50):  # TLS writes are flushed by a callLater(0) on the clock
        reactor.advance(0)
        pump.pump()
    return collect


def test_startup_writes_ca_leaves_and_token_before_the_reactor_runs(
    started: tuple[AegisService, MemoryReactorClock, Path]
) -> None:
    root, reactor, tmp_path = started
    assert not reactor.running
    names = {p.name for p in (tmp_path / "ssl").iterdir()}
    assert {CA_CERT_FILE, f"{ADMIN_BASENAME}.key", f"{PROXY_BASENAME}.crt"} <= names
    token = tmp_path / "data" / "admin-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert root.getServiceNamed("admin") is not None


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_admin_listener_serves_the_admin_certificate_over_tls(
    started: tuple[AegisService, MemoryReactorClock, Path], hostname: str
) -> None:
    root, reactor, tmp_path = started
    root.getServiceNamed("admin").privilegedStartService()
    ca_pem = (tmp_path / "ssl" / CA_CERT_FILE).read_bytes()
    collect = handshake(reactor, ca_pem, hostname)
    assert collect.data.startswith(b"HTTP/1.1 200 "), collect.data[:200]
    assert b"application/zip" in collect.data


def test_a_client_trusting_another_ca_fails_the_handshake(
    started: tuple[AegisService, MemoryReactorClock, Path]
) -> None:
    root, reactor, _ = started
    root.getServiceNamed("admin").privilegedStartService()
    other = trustme.CA().cert_pem.bytes()
    collect = handshake(reactor, other, "localhost")
    assert collect.data == b""
    assert collect.lost is not None


def test_admin_certificate_can_be_replaced_for_new_connections(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ssl")
    first = ca.ensure(admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC))
    creator = AdminCertificateCreator(first.admin)
    assert creator.serverConnectionForTLS(None).get_certificate(  # type: ignore[arg-type]
        as_cryptography=True) == first.admin.leaf
    (tmp_path / "ssl" / f"{ADMIN_BASENAME}.crt").unlink()
    second = ca.ensure(admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC))
    creator.replace(second)
    assert creator.serverConnectionForTLS(None).get_certificate(  # type: ignore[arg-type]
        as_cryptography=True) == second.admin.leaf != first.admin.leaf


def test_local_ca_maintenance_is_part_of_the_tree(
    started: tuple[AegisService, MemoryReactorClock, Path]
) -> None:
    root, _, _ = started
    assert isinstance(root.getServiceNamed("local-ca"), LocalCAMaintenance)
