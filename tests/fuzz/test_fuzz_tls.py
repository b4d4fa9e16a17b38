"""ClientHello handling under hypothesis: real ClientHellos with hostile SNI, overwritten
bytes and odd segmenting into the HTTPS TLS layer in memory (ACCEPTANCE 17, 18)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.targets import _server, client_hello, tls


@given(st.binary(max_size=200))
def test_mutated_client_hellos_never_escape_the_tls_layer(data: bytes) -> None:
    tls(data)


@given(st.binary(min_size=1, max_size=60).filter(lambda b: b"\x00" not in b))
def test_any_server_name_gets_a_server_hello_or_an_alert(name: bytes) -> None:
    protocol, transport = _server()
    protocol.dataReceived(client_hello(name))
    output = transport.value()
    assert output[:1] in (b"\x16", b"\x15"), output[:8]  # handshake or alert record


def test_segmented_client_hello_gets_the_server_hello() -> None:
    protocol, transport = _server()
    for byte in client_hello(b"app.example.com"):
        protocol.dataReceived(bytes([byte]))
    assert transport.value()[:1] == b"\x16"
