"""Bodies stream through the proxy with back-pressure: memory stays flat on large bodies.

The proxy runs in its own process (bench/proxy/run_proxy.py) so its peak RSS (VmHWM) can be
read; the upstream and the client live in the test process. 1 GiB goes each way (the issue's
"a 1 GB upload or download must pass with flat memory"), over plain HTTP and over HTTPS (the
HTTPS listener's transport, TLS on the socket).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.interfaces import IPullProducer
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from tests.test_proxy_support import (
    TLS_LEAF,
    Seen,
    UpstreamFactory,
    UpstreamProtocol,
    listen,
    tls_client,
)

ROOT = Path(__file__).resolve().parent.parent
SIZE = 1024 * 1024 * 1024
BLOCK = b"x" * 65536


@implementer(IPullProducer)
class _Source:
    def __init__(self, proto: UpstreamProtocol, total: int) -> None:
        self.proto = proto
        self.left = total

    def resumeProducing(self) -> None:
        if self.left <= 0:
            self.proto.transport.unregisterProducer()
            return
        chunk = BLOCK[: min(len(BLOCK), self.left)]
        self.left -= len(chunk)
        self.proto.transport.write(chunk)

    def stopProducing(self) -> None:
        self.left = 0


def _big(proto: UpstreamProtocol, seen: Seen) -> None:
    if seen.path == b"/download":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
        proto.transport.registerProducer(_Source(proto, SIZE), False)
    else:
        body = b"%d" % proto.f.body_bytes
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))


def _slow_start(proto: UpstreamProtocol) -> None:
    """The upstream stops reading for a second at the start of an upload: without
    back-pressure the proxy would have to hold everything the client sends meanwhile."""
    if proto.url == b"/upload":
        proto.transport.pauseProducing()
        reactor.callLater(1.0, proto.transport.resumeProducing)


def _start_proxy(upstream_port: int, tls: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    certificate = ["--cert", str(tls / "cert.pem"), "--key", str(tls / "key.pem")] if tls else []
    proc = subprocess.Popen(
        [sys.executable, os.environ.get("PROXY_SCRIPT", str(ROOT / "bench/proxy/run_proxy.py")),
         "--upstream", f"127.0.0.1:{upstream_port}", *certificate],
        stdout=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("LISTENING "), line
    return proc, int(line.split()[1])


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def _connect(port: int, tls: bool) -> socket.socket:
    return tls_client(port, 30) if tls else socket.create_connection(("127.0.0.1", port), 30)


def _upload(port: int, tls: bool) -> bytes:
    with _connect(port, tls) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: big.test\r\nContent-Length: %d\r\n\r\n"
                     % SIZE)
        for _ in range(SIZE // len(BLOCK)):
            sock.sendall(BLOCK)
        return sock.recv(65536)


def _download(port: int, tls: bool) -> int:
    with _connect(port, tls) as sock:
        sock.sendall(b"GET /download HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n\r\n")
        total = 0
        head = b""
        time.sleep(1.0)  # a slow reader: the proxy must stop reading the upstream meanwhile
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        total = len(head.split(b"\r\n\r\n", 1)[1])
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
        return total


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest_twisted.ensureDeferred
async def test_large_bodies_stream_with_flat_memory(tls: bool, tmp_path: Path) -> None:
    if tls:
        TLS_LEAF.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        TLS_LEAF.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    upstream = UpstreamFactory(handler=_big, keep_bodies=False, on_head=_slow_start)
    port: Any = listen(upstream)
    proc, proxy_port = _start_proxy(port.getHost().port, tmp_path if tls else None)
    try:
        baseline = _rss_kb(proc.pid, "VmRSS")
        answer = await deferToThread(_upload, proxy_port, tls)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"%d" % SIZE)
        received = await deferToThread(_download, proxy_port, tls)
        assert received == SIZE
        peak = _rss_kb(proc.pid, "VmHWM")
        # 2 GiB went through; the proxy's peak grew by a few MB at most.
        print(f"proxy RSS {baseline} kB before, peak {peak} kB after 2 GiB")
        assert peak - baseline < 40 * 1024, (baseline, peak)
    finally:
        proc.terminate()
        proc.wait(10)
        await port.stopListening()
