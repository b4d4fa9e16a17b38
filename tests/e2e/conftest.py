"""One `aegis run` for the whole end-to-end suite, with its peers: Pebble (when installed)
as the ACME server, the fake Cloudflare API, and an echo upstream for proxied hosts.

Every test here is marked ``e2e`` (run them alone with ``pytest -m e2e``) and talks to the
process over loopback only. Every response a test receives goes through :class:`Stack` and
is kept, so the secrets audit at the end (test_zz_secrets_audit.py) can search them all.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from aegis.testing.pebble import PebbleServer, pebble_available, start_pebble
from tests.aegis_process import AegisProcess
from tests.e2e.peers import FakeCloudflareProcess, Upstream, echo_upstream, fake_cloudflare

ADMIN_TOKEN = "e2e-admin-token-5f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4f"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.integration)


@dataclass
class Stack:
    aegis: AegisProcess
    cloudflare: FakeCloudflareProcess
    upstream: Upstream
    pebble: PebbleServer | None
    ca: trustme.CA = field(default_factory=trustme.CA)
    responses: list[bytes] = field(default_factory=list)
    secrets: list[bytes] = field(default_factory=list)  # what must never appear anywhere

    @property
    def local_ca(self) -> Path:
        return self.aegis.workdir / ".cache" / "ssl" / "aegis-local-ca.crt"

    def port(self, listener: str) -> int:
        return self.aegis.ports[listener]

    # -- the admin API -------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN,
            headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port("admin listener"), timeout=30,
            context=ssl.create_default_context(cafile=str(self.local_ca)))
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        connection.request(method, path, data, sent)
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        self.responses.append(payload)
        try:
            return response.status, json.loads(payload) if payload else None
        except ValueError:
            return response.status, payload

    # -- raw connections -----------------------------------------------------------------------
    def admin_socket(self) -> ssl.SSLSocket:
        context = ssl.create_default_context(cafile=str(self.local_ca))
        raw = socket.create_connection(("127.0.0.1", self.port("admin listener")), timeout=30)
        return context.wrap_socket(raw, server_hostname="localhost")

    def plain_socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port("HTTP listener")), timeout=30)

    def exchange(self, sock: socket.socket, data: bytes, wait: float = 5.0) -> bytes:
        """Send ``data``, read until the server closes or ``wait`` seconds pass."""
        with contextlib.suppress(OSError):
            sock.sendall(data)
        received = b""
        sock.settimeout(wait)
        with contextlib.suppress(OSError, TimeoutError):
            while chunk := sock.recv(65536):
                received += chunk
        sock.close()
        self.responses.append(received)
        return received


def trickle(stack: Stack, sock: socket.socket, data: bytes, limit: float = 20.0) -> bytes:
    """Send ``data`` a byte about every second (slowloris) until the server answers or
    closes, or ``limit`` seconds pass; what it sent back."""
    started = time.monotonic()
    received = b""
    sock.settimeout(1)
    for byte in data:
        if time.monotonic() - started > limit:
            break
        try:
            sock.sendall(bytes([byte]))
            received = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        break  # an answer, or the end of the connection
    sock.close()
    stack.responses.append(received)
    return received


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e-aegis")
    with contextlib.ExitStack() as stop, fake_cloudflare() as cloudflare, \
            echo_upstream() as upstream:
        pebble = None
        env = {"AEGIS_ADMIN_TOKEN": ADMIN_TOKEN,
               "AEGIS_CLOUDFLARE_API_BASE": cloudflare.api_base,
               "AEGIS_PROXY_UPSTREAM_TIMEOUT": "5"}
        if pebble_available():
            pebble = start_pebble(tmp_path_factory.mktemp("e2e-pebble"))
            stop.callback(pebble.close)
            env.update({
                "AEGIS_HTTP_LISTEN": f"tcp:{pebble.http_port}:interface=127.0.0.1",
                "AEGIS_ACME_DIRECTORY": pebble.directory_url,
                "AEGIS_ACME_CA_BUNDLE": str(pebble.ca_bundle),
                "AEGIS_ACME_EMAIL": "ops@example.com",
            })
        aegis = AegisProcess(workdir, env=env)
        aegis.start(expect=("HTTP listener", "HTTPS listener", "admin listener"))
        stop.callback(aegis.kill)
        result = Stack(aegis, cloudflare, upstream, pebble)
        result.secrets += [ADMIN_TOKEN.encode(), cloudflare.token.encode()]
        yield result
        assert aegis.stop() == 0, aegis.text()[-3000:]
