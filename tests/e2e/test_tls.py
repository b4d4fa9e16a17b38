"""TLS and SNI on the HTTPS listener of a real `aegis run`: ACCEPTANCE 15-17."""

from __future__ import annotations

import select
import socket
import ssl

from cryptography import x509
from OpenSSL import SSL

from tests.e2e.conftest import Stack


def served_leaf(stack: Stack, server_name: bytes | None) -> x509.Certificate | None:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    raw = socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), timeout=10)
    connection = SSL.Connection(context, raw)
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    connection.set_connect_state()
    try:
        while True:
            try:
                connection.do_handshake()
                break
            except SSL.WantReadError:  # the socket has a timeout, so it is non-blocking
                if not select.select([raw], [], [], 10)[0]:
                    return None
    except SSL.Error:
        return None
    finally:
        raw.close()
    peer = connection.get_peer_certificate()
    return peer.to_cryptography() if peer is not None else None


def names(certificate: x509.Certificate | None) -> list[str]:
    assert certificate is not None
    return certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_lines_15_to_17_sni(stack: Stack) -> None:
    fallback = served_leaf(stack, None)
    assert "e2e-tls.example.com" not in names(fallback)  # line 15: never a customer's
    assert served_leaf(stack, b"unknown.example.org") == fallback  # line 17
    assert served_leaf(stack, b"bad\x01name.example") is None  # line 17: a clean alert
    assert "bad\x01name" not in stack.aegis.text()
    # line 16: the same certificate for the trailing dot and upper case as for the name
    leaf = stack.ca.issue_cert("e2e-tls.example.com")
    status, body = stack.api("POST", "/api/v1/certificates", {
        "cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
        "key_pem": leaf.private_key_pem.bytes().decode()})
    assert status == 201, body
    stack.secrets.append(leaf.private_key_pem.bytes().splitlines()[2])

    def served_names(name: bytes) -> list[str]:
        return names(served_leaf(stack, name))

    from tests.e2e.conftest import wait_until

    wait_until(lambda: served_names(b"e2e-tls.example.com") == ["e2e-tls.example.com"])
    assert served_names(b"E2E-TLS.EXAMPLE.COM.") == ["e2e-tls.example.com"]
    assert served_names(b"other.example.com") != ["e2e-tls.example.com"]
    context = ssl.create_default_context(cafile=None)
    context.load_verify_locations(cadata=stack.ca.cert_pem.bytes().decode())
    with socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), 10) as raw, \
            context.wrap_socket(raw, server_hostname="e2e-tls.example.com") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
