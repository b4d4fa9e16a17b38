"""SIGHUP/SIGUSR1 handling and systemd notifications, in memory (process tests are in
tests/test_service_signals.py and tests/test_systemd.py)."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed

from aegis import sdnotify
from aegis.control import Reloader, SignalControl


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    found = []
    sock.settimeout(0.05)
    try:
        while True:
            found.append(sock.recv(4096).decode())
    except TimeoutError:
        return found


def test_notify_sends_one_datagram(notify_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=listening")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=listening"


def test_notify_abstract_socket_and_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"aegis-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"STOPPING=1"
    assert not sdnotify.notify("READY=1", {})
    # a socket that is gone is logged, not raised
    assert not sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"})


def test_reload_runs_every_step_even_after_a_failure(notify_socket: socket.socket) -> None:
    done: list[str] = []

    def broken() -> Deferred[None]:
        done.append("store")
        return fail(RuntimeError("database is locked"))

    def local_ca() -> Deferred[None]:
        done.append("local CA")
        return succeed(None)

    reloader = Reloader([lambda: done.append("reopen")],
                        [("certificates and hosts", broken), ("local CA", local_ca)])
    finished = reloader.reload()
    assert finished.called and done == ["reopen", "store", "local CA"]
    states = _received(notify_socket)
    assert states[0].startswith("RELOADING=1\nMONOTONIC_USEC=") and states[1] == "READY=1"


def test_a_second_sighup_waits_for_the_first() -> None:
    gates: list[Deferred[None]] = []

    def slow() -> Deferred[None]:
        gates.append(Deferred())
        return gates[-1]

    reloader = Reloader([], [("store", slow)])
    finished: list[str] = []
    reloader.reload().addCallback(lambda _: finished.append("first"))
    reloader.reload().addCallback(lambda _: finished.append("second"))
    assert len(gates) == 1 and finished == []
    gates[0].callback(None)
    assert len(gates) == 2 and finished == ["first"]
    gates[1].callback(None)
    assert finished == ["first", "second"]


class _Reactor:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append(f)


def test_signal_handlers_schedule_on_the_reactor_chain_and_are_restored() -> None:
    twistd_rotations: list[int] = []
    installed: dict[int, Any] = {signal.SIGUSR1: lambda n, f: twistd_rotations.append(n)}

    def install(number: int, handler: Any) -> Any:
        previous = installed.get(number, signal.SIG_DFL)
        installed[number] = handler
        return previous

    reactor = _Reactor()
    reloader = Reloader([], [])
    control = SignalControl(reactor, reloader, install=install)
    control.startService()
    installed[signal.SIGHUP](signal.SIGHUP, None)
    installed[signal.SIGUSR1](signal.SIGUSR1, None)
    assert reactor.calls == [reloader.reload, reloader.reopen_logs]
    assert twistd_rotations == [signal.SIGUSR1]  # twistd's --logfile handler still runs
    control.stopService()
    assert installed[signal.SIGHUP] == signal.SIG_IGN and callable(installed[signal.SIGUSR1])
