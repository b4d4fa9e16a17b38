"""The peers an end-to-end run talks to, as real processes: the fake Cloudflare API, and a
small HTTP upstream for proxied hosts. Pebble comes from :mod:`aegis.testing.pebble`."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.aegis_process import ROOT

CLOUDFLARE_TOKEN = "e2e-cloudflare-token-0123456789abcdef"


@dataclass(frozen=True)
class FakeCloudflareProcess:
    api_base: str
    ca_path: Path
    token: str
    zone_id: str


@contextlib.contextmanager
def fake_cloudflare() -> Iterator[FakeCloudflareProcess]:
    """``python -m aegis.testing.cloudflare`` on a free port, until the block ends."""
    with tempfile.TemporaryDirectory(prefix="aegis-e2e-cf-") as directory:
        process = subprocess.Popen(
            [sys.executable, "-m", "aegis.testing.cloudflare", "--port", "0", "--ca-dir",
             directory, "--token", CLOUDFLARE_TOKEN],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            lines = dict(process.stdout.readline().strip().split(": ", 1) for _ in range(5))
            zone = next(value for key, value in lines.items() if key.startswith("Zone "))
            yield FakeCloudflareProcess(lines["Fake Cloudflare API"], Path(lines["Test CA"]),
                                        lines["API token"], zone)
        finally:
            process.terminate()
            process.wait(timeout=10)


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it saw (method, path, a few headers)."""

    protocol_version = "HTTP/1.1"
    seen: list[str]

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(f"{self.command} {self.path}")  # type: ignore[attr-defined]
        text = (f"{self.command} {self.path} host={self.headers.get('Host')} "
                f"xff={self.headers.get('X-Forwarded-For')} body={len(body)}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Upstream:
    port: int
    seen: list[str]


@contextlib.contextmanager
def echo_upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Upstream(server.server_address[1], server.seen)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
