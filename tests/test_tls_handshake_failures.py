"""The metrics count handshakes that fail after selection: a client that closes before
finishing, one that speaks no TLS, and one that sends nothing until the deadline — over
loopback, on the production transport (TLS on the socket)."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import replace

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from aegis.monitor.counters import CLIENT_CLOSED, TIMEOUT, TLS_ERROR, TrafficCounters
from tests.test_tls_direct import Recorder, Server, acceptor


def _clients(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)):
        pass  # connects and closes: no ClientHello at all
    with socket.create_connection(("127.0.0.1", port)) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # HTTP to the HTTPS port
        plain.settimeout(5)
        with contextlib.suppress(OSError):
            plain.recv(100)
    with socket.create_connection(("127.0.0.1", port)) as silent:
        time.sleep(1.6)  # past the 1 s handshake deadline, saying nothing
        silent.settimeout(5)
        with contextlib.suppress(OSError):
            silent.recv(100)


@pytest_twisted.ensureDeferred
async def test_failed_handshakes_are_counted_by_reason() -> None:
    counters = TrafficCounters()
    server = Server(Recorder, replace(acceptor(timeout=1.0), counters=counters))
    await server.serve(_clients)
    await deferLater(reactor, 0.2, lambda: None)
    failures = counters.handshake_failures
    assert failures[TIMEOUT] == 1, failures
    assert failures[TLS_ERROR] == 1, failures
    assert failures[CLIENT_CLOSED] == 1, failures
