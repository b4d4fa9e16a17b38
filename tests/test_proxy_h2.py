"""HTTP/2 clients (ALPN h2, real TLS with a trustme certificate) proxied to an HTTP/1.1
upstream: curl --http2 for requests and bodies both ways, h2load for many streams."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from aegis.proxy import proxy_factory
from aegis.proxy.routing import Forward, ProxyLimits, StaticRouter
from tests.test_proxy_support import (
    TLS_CA,
    Seen,
    UpstreamFactory,
    UpstreamProtocol,
    listen,
    listen_tls,
)

BIG = 8 * 1024 * 1024


def _handler(proto: UpstreamProtocol, seen: Seen) -> None:
    if seen.path == b"/big":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG)
        proto.transport.write(b"y" * BIG)
    elif seen.path == b"/chunked":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                              b"Connection: keep-alive\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    else:
        body = b"len=%d xfp=%s" % (len(seen.body), b",".join(seen.header(b"x-forwarded-proto")))
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))


@pytest.fixture
def tls_rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca_file = tmp_path / "ca.pem"
    TLS_CA.cert_pem.write_to_path(str(ca_file))
    upstream = UpstreamFactory(handler=_handler)
    up_port = listen(upstream)
    router = StaticRouter({}, default=Forward("127.0.0.1", up_port.getHost().port))
    factory = proxy_factory(router, reactor, ProxyLimits())
    port = listen_tls(factory)  # the HTTPS listener's transport
    yield upstream, port.getHost().port, ca_file, tmp_path
    port.stopListening()
    up_port.stopListening()


def _curl(port: int, ca: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(ca), "--resolve", f"app.test:{port}:127.0.0.1",
         "-w", "\n%{http_version} %{http_code}", *args], capture_output=True, timeout=30)


@pytest_twisted.ensureDeferred
async def test_curl_http2_get_post_and_large_download(tls_rig: Any) -> None:
    upstream, port, ca, tmp = tls_rig
    url = f"https://app.test:{port}"
    done = await deferToThread(_curl, port, ca, url + "/hello")
    assert done.stdout == b"len=0 xfp=https\n2 200", done.stderr
    payload = tmp / "payload"
    payload.write_bytes(b"z" * 3_000_000)
    done = await deferToThread(_curl, port, ca, "--data-binary", f"@{payload}", url + "/up")
    assert done.stdout == b"len=3000000 xfp=https\n2 200", done.stderr
    assert upstream.seen[-1].method == b"POST"
    assert upstream.seen[-1].header(b"content-length") == [b"3000000"]
    done = await deferToThread(_curl, port, ca, "-o", str(tmp / "big"), url + "/big")
    assert done.stdout == b"\n2 200", done.stderr
    assert (tmp / "big").stat().st_size == BIG
    done = await deferToThread(_curl, port, ca, url + "/chunked")
    assert done.stdout == b"abc\n2 200"
    assert upstream.connections == 1  # every stream went over the one pooled connection


@pytest_twisted.ensureDeferred
async def test_h2load_many_concurrent_streams(tls_rig: Any) -> None:
    _, port, _, _ = tls_rig
    done = await deferToThread(subprocess.run, [
        "h2load", "-n", "400", "-c", "4", "-m", "20", f"https://127.0.0.1:{port}/x"],
        capture_output=True, timeout=60)
    out = done.stdout.decode()
    assert "400 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 400 2xx" in out
    assert "Application protocol: h2" in out
