"""Graceful stop: in-flight work finishes, idle connections close, stragglers are aborted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXClientEndpoint,
    UNIXServerEndpoint,
    connectProtocol,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from zope.interface import implementer

from aegis.listeners import GracefulListener, IDrainable


@implementer(IDrainable)
class Busy(Protocol):
    """Holds a 'request' in flight until told to finish; drains by closing when done."""

    instances: list[Busy] = []

    def __init__(self) -> None:
        self.draining = False
        Busy.instances.append(self)

    def drain(self) -> None:
        self.draining = True

    def finish(self) -> None:
        assert self.transport is not None
        self.transport.write(b"done")
        if self.draining:
            self.transport.loseConnection()


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(self.data)


def _listener(timeout: float, fatal: list[str], unix: str | None = None) -> GracefulListener:
    endpoint: Any = (UNIXServerEndpoint(reactor, unix) if unix is not None
                     else TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
    return GracefulListener(endpoint, Factory.forProtocol(Busy), reactor, timeout,
                            "test listener", fatal.append)


@pytest.fixture(params=["tcp", "unix"])
def kind(request: Any, tmp_path: Path) -> str | None:
    """``tcp``: Aegis's port knows its connections; ``unix``: each protocol is wrapped."""
    return None if request.param == "tcp" else str(tmp_path / "listener.sock")


def _connect(port: Any, unix: str | None, client: Collect) -> Any:
    endpoint: Any = (UNIXClientEndpoint(reactor, unix) if unix is not None
                     else TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
    return connectProtocol(endpoint, client)


@pytest_twisted.inlineCallbacks
def test_in_flight_work_finishes_before_stop_completes(kind: str | None) -> Any:
    Busy.instances.clear()
    fatal: list[str] = []
    service = _listener(5.0, fatal, kind)
    service.privilegedStartService()
    service.startService()
    port = service.port()
    assert port is not None
    assert (kind is None) == isinstance(getattr(port, "connections", None), set)
    client = Collect()
    yield _connect(port, kind, client)
    yield deferLater(reactor, 0.05, lambda: None)
    stopping = service.stopService()
    assert not stopping.called  # waiting for the busy connection
    Busy.instances[0].finish()
    assert (yield client.closed) == b"done"
    yield stopping
    assert fatal == []


@pytest_twisted.inlineCallbacks
def test_stragglers_aborted_after_timeout(kind: str | None) -> Any:
    Busy.instances.clear()
    service = _listener(0.3, [], kind)
    service.privilegedStartService()
    service.startService()
    port = service.port()
    assert port is not None
    client = Collect()
    yield _connect(port, kind, client)
    yield deferLater(reactor, 0.05, lambda: None)
    started = reactor.seconds()
    yield service.stopService()
    yield client.closed
    assert 0.25 <= reactor.seconds() - started < 2


@pytest_twisted.inlineCallbacks
def test_bind_failure_is_fatal() -> Any:
    first = _listener(1.0, [])
    first.privilegedStartService()
    port = first.port()
    assert port is not None
    fatal: list[str] = []
    second = GracefulListener(
        TCP4ServerEndpoint(reactor, port.getHost().port, interface="127.0.0.1"),
        Factory.forProtocol(Busy), reactor, 1.0, "second listener", fatal.append,
    )
    second.privilegedStartService()
    assert fatal and "second listener could not listen" in fatal[0]
    yield first.stopService()


@pytest_twisted.inlineCallbacks
def test_closed_connections_leave_the_port_and_stop_is_immediate() -> Any:
    Busy.instances.clear()
    service = _listener(5.0, [])
    service.privilegedStartService()
    service.startService()
    port: Any = service.port()
    clients = [Collect() for _ in range(3)]
    for client in clients:
        yield _connect(port, None, client)
    yield deferLater(reactor, 0.05, lambda: None)
    assert len(port.connections) == 3
    for busy in Busy.instances:
        busy.transport.loseConnection()  # idle: they end on their own
    yield deferLater(reactor, 0.1, lambda: None)
    assert port.connections == set()  # nothing kept for closed connections
    started = reactor.seconds()
    yield service.stopService()
    assert reactor.seconds() - started < 0.5
