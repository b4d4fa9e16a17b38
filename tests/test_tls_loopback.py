"""The HTTPS TLS layer over loopback with real clients: openssl s_client, curl, Python ssl.

The server runs on the test reactor (pytest-twisted); clients run in threads so the reactor
keeps serving while they block.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet import reactor, threads
from twisted.logger import formatEvent, globalLogPublisher

from aegis.tls.endpoint import https_endpoint
from aegis.tls.selection import MemoryCertificates, SelectionState
from tests.test_tls_support import PKI, RecordingIssuance, echo_factory, host, port_number

T = TypeVar("T")

pki = PKI()
FALLBACK = pki.leaf("fallback.invalid", cert_id=None)
APP = pki.leaf("app.example.com")
STORED = pki.leaf("stored.example.com", "*.wild.example.com")
LE = pki.leaf("le.example.com", source="letsencrypt")
V13 = pki.leaf("v13.example.com")
NEEDS_LE = "pending.example.com"


def make_state(issuance: RecordingIssuance | None = None) -> SelectionState:
    return SelectionState(
        MemoryCertificates([APP, STORED, LE, V13]),
        FALLBACK,
        on_demand=issuance,
        hosts=[
            host("app.example.com", ssl_cert_id=APP.id),
            host("le.example.com", NEEDS_LE, ssl_mode="letsencrypt"),
            host("v13.example.com", ssl_cert_id=V13.id, tls_min_version="1.3"),
        ],
    )


async def serve(state: SelectionState, handshake_timeout: float = 10.0) -> tuple[Any, int]:
    """The production HTTPS listener (TLS on the socket, :mod:`aegis.tls.direct`).

    Twisted's default backlog of 50 makes a burst of 500 connects wait for SYN retries.
    """
    endpoint = https_endpoint(reactor, "tcp:0:interface=127.0.0.1:backlog=1024", state,
                              handshake_timeout=handshake_timeout)
    port = await endpoint.listen(echo_factory())
    return port, port_number(port)


def in_thread(function: Callable[..., T], *args: Any) -> Any:
    return threads.deferToThread(function, *args)


def der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


# --- clients --------------------------------------------------------------------------------


def openssl_leaf(port: int, server_name: str | None, *extra: str) -> bytes | None:
    """The DER leaf ``openssl s_client`` received, or None if the handshake failed."""
    name_args = ["-servername", server_name] if server_name else ["-noservername"]
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *name_args, *extra],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    text = result.stdout.decode()
    if "-----BEGIN CERTIFICATE-----" not in text:
        return None
    return der(x509.load_pem_x509_certificate(text.encode()))


def client_context(**settings: Any) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in settings.items():
        setattr(context, name, value)
    return context


def read_response(read: Callable[[], bytes]) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = read()
        if not chunk:
            raise ConnectionError("closed before the response")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += read()
    return body


def python_get(port: int, server_name: str | None, **settings: Any) -> tuple[bytes, bytes]:
    """(DER leaf, response body) from Python's ssl module (the system OpenSSL 3.0)."""
    context = client_context(**settings)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        leaf = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return leaf or b"", read_response(lambda: tls.recv(4096))


def fragmented_get(port: int, server_name: str, mode: str) -> tuple[bytes, bytes]:
    """Send the ClientHello in 1-byte TCP segments (``bytes``) or 40-byte TLS records
    (``records``), then finish the handshake and one request normally."""
    context = client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "bytes":
            for index in range(len(hello)):
                sock.sendall(hello[index : index + 1])
                time.sleep(0.0005)
        else:
            header, body = hello[:3], hello[5:]
            assert len(body) == int.from_bytes(hello[3:5], "big")
            for start in range(0, len(body), 40):
                piece = body[start : start + 40]
                sock.sendall(header + len(piece).to_bytes(2, "big") + piece)

        def pump() -> None:
            data = outgoing.read()
            if data:
                sock.sendall(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during handshake") from None
                incoming.write(chunk)
        pump()
        tls.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        pump()

        def read() -> bytes:
            while True:
                try:
                    return tls.read(4096)
                except ssl.SSLWantReadError:
                    incoming.write(sock.recv(65536))

        return tls.getpeercert(binary_form=True) or b"", read_response(read)


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("app.example.com", APP),  # 1: host binding
        ("stored.example.com", STORED),  # 2: stored certificate, no host
        ("x.wild.example.com", STORED),  # 2: wildcard
        ("le.example.com", LE),  # 3: letsencrypt host
        (NEEDS_LE, FALLBACK),  # 3 missed → 4
        ("unknown.example.org", FALLBACK),  # 4
        (None, FALLBACK),  # no SNI
        ("APP.EXAMPLE.COM.", APP),  # case and trailing dot
    ],
)
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_gets_the_selected_certificate(
    server_name: str | None, expected: Any
) -> None:
    issuance = RecordingIssuance()
    port, number = await serve(make_state(issuance))
    try:
        leaf = await in_thread(openssl_leaf, number, server_name)
    finally:
        await port.stopListening()
    assert leaf == der(expected.leaf)
    assert issuance.wanted == ([NEEDS_LE] if server_name == NEEDS_LE else [])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest_twisted.ensureDeferred
async def test_curl_resolve_verifies_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "root.pem"
    pki.root.cert_pem.write_to_path(str(root))
    port, number = await serve(make_state())
    try:
        result = await in_thread(
            lambda: subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--http1.1",
                    "--resolve",
                    f"app.example.com:{number}:127.0.0.1",
                    "--cacert",
                    str(root),
                    f"https://app.example.com:{number}/",
                ],
                capture_output=True,
                timeout=20,
                check=False,
            )
        )
    finally:
        await port.stopListening()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"sni=app.example.com step=host_binding"


@pytest_twisted.ensureDeferred
async def test_python_ssl_no_sni_and_trailing_dot() -> None:
    port, number = await serve(make_state())
    try:
        no_sni = await in_thread(python_get, number, None)
        dotted = await in_thread(python_get, number, "App.Example.Com.")
    finally:
        await port.stopListening()
    assert no_sni == (der(FALLBACK.leaf), b"sni=None step=fallback")
    assert dotted == (der(APP.leaf), b"sni=app.example.com step=host_binding")


@pytest.mark.parametrize("mode", ["bytes", "records"])
@pytest_twisted.ensureDeferred
async def test_split_client_hello_gets_the_same_result(mode: str) -> None:
    port, number = await serve(make_state())
    try:
        whole = await in_thread(python_get, number, "app.example.com")
        split = await in_thread(fragmented_get, number, "app.example.com", mode)
    finally:
        await port.stopListening()
    assert split == whole == (der(APP.leaf), b"sni=app.example.com step=host_binding")


@pytest_twisted.ensureDeferred
async def test_tls12_client_refused_by_13_host_and_accepted_by_12_host() -> None:
    port, number = await serve(make_state())
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    try:
        with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"):
            await in_thread(lambda: python_get(number, "v13.example.com", **tls12))
        leaf, _ = await in_thread(lambda: python_get(number, "app.example.com", **tls12))
        modern, _ = await in_thread(python_get, number, "v13.example.com")
        old_openssl = await in_thread(openssl_leaf, number, "v13.example.com", "-tls1_2")
    finally:
        await port.stopListening()
    assert leaf == der(APP.leaf)
    assert modern == der(V13.leaf)
    assert old_openssl is None


@pytest_twisted.ensureDeferred
async def test_certificate_swap_keeps_keep_alive_connection() -> None:
    state = make_state()
    port, number = await serve(state)

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", number), timeout=10)
        return client_context().wrap_socket(raw, server_hostname="app.example.com")

    tls = await in_thread(connect)

    def get() -> bytes:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        return read_response(lambda: tls.recv(4096))

    try:
        assert await in_thread(get) == b"sni=app.example.com step=host_binding"
        renewed = pki.leaf("app.example.com", cert_id=APP.id)
        state._certificates = MemoryCertificates([renewed, STORED, LE, V13])
        state.certificates_changed()
        assert await in_thread(get) == b"sni=app.example.com step=host_binding"
        assert tls.getpeercert(binary_form=True) == der(APP.leaf)
        fresh, _ = await in_thread(python_get, number, "app.example.com")
        assert fresh == der(renewed.leaf)
    finally:
        tls.close()
        await port.stopListening()


def _stall_and_probe(number: int, count: int, timeout: float) -> tuple[float, float]:
    """Open ``count`` stalled handshakes, then time one new client and the stalled closes."""
    stalled = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", number), timeout=10)
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that never completes
        stalled.append(sock)
    started = time.monotonic()
    leaf, _ = python_get(number, "app.example.com")
    served = time.monotonic() - started
    assert leaf == der(APP.leaf)
    deadline = time.monotonic() + timeout + 5
    for sock in stalled:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
        finally:
            sock.close()
    return served, time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_500_stalled_handshakes_closed_while_new_clients_are_served() -> None:
    port, number = await serve(make_state(), handshake_timeout=1.0)
    try:
        served, all_closed = await in_thread(_stall_and_probe, number, 500, 1.0)
    finally:
        await port.stopListening()
    assert served < 1.0
    assert all_closed < 1.0 + 3.0


@pytest_twisted.ensureDeferred
async def test_control_characters_in_sni_get_an_alert_and_a_sanitised_log() -> None:
    events: list[Any] = []
    globalLogPublisher.addObserver(events.append)
    port, number = await serve(make_state())
    try:
        leaf = await in_thread(openssl_leaf, number, "evil\x01\x1b[31m.example.com")
        after = await in_thread(openssl_leaf, number, "app.example.com")
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(events.append)
    assert leaf is None
    assert after == der(APP.leaf)
    logged = [formatEvent(e) for e in events if "SNI" in e.get("log_format", "")]
    assert logged == ["TLS handshake refused: SNI 'evil\\x01\\x1b[31m.example.com' contains "
                      "control or non-ASCII characters"]
