"""Encrypted keys whose key derivation would stall the process are refused before any
decryption (issue 17, fault 1); honest encrypted keys still open."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aegis.certs.errors import CertificateError
from aegis.certs.pbe import (
    KEY_ENCRYPTION_TOO_COSTLY,
    MAX_PBKDF2_ITERATIONS,
    check_encryption_cost,
)
from aegis.certs.pem import parse_private_key


def tlv(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def oid(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | (value & 0x7F))
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n"


AES256_CBC = seq(oid("2.16.840.1.101.3.4.1.42"), tlv(0x04, os.urandom(16)))


def pbkdf2_key(iterations: int) -> str:
    kdf = seq(oid("1.2.840.113549.1.5.12"), seq(tlv(0x04, os.urandom(16)), integer(iterations)))
    algorithm = seq(oid("1.2.840.113549.1.5.13"), seq(kdf, AES256_CBC))
    return pem(seq(algorithm, tlv(0x04, os.urandom(160))))


def scrypt_key(n: int, r: int, p: int) -> str:
    kdf = seq(oid("1.3.6.1.4.1.11591.4.11"),
              seq(tlv(0x04, os.urandom(16)), integer(n), integer(r), integer(p)))
    algorithm = seq(oid("1.2.840.113549.1.5.13"), seq(kdf, AES256_CBC))
    return pem(seq(algorithm, tlv(0x04, os.urandom(160))))


def refusal(text: str, name: str = "key_pem") -> CertificateError:
    started = time.monotonic()
    with pytest.raises(CertificateError) as caught:
        parse_private_key(text, "passphrase", name)
    assert time.monotonic() - started < 0.5, "the key derivation ran"
    return caught.value


def test_fault_1_a_huge_pbkdf2_iteration_count_is_refused_before_decrypting() -> None:
    error = refusal(pbkdf2_key(40_000_000))
    assert error.code == KEY_ENCRYPTION_TOO_COSTLY and error.status == 400
    assert error.field == "key_pem"
    assert "40000000" in error.message and str(MAX_PBKDF2_ITERATIONS) in error.message


def test_fault_1_the_inline_host_key_field_is_named() -> None:
    assert refusal(pbkdf2_key(10_000_000), "ssl_key_pem").field == "ssl_key_pem"


@pytest.mark.parametrize(("n", "r", "p"), [(2**20, 8, 1), (2**14, 8, 64), (2**14, 1024, 1)])
def test_fault_1_costly_scrypt_parameters_are_refused(n: int, r: int, p: int) -> None:
    assert refusal(scrypt_key(n, r, p)).code == KEY_ENCRYPTION_TOO_COSTLY


def test_pkcs12_style_iterations_are_capped_too() -> None:
    algorithm = seq(oid("1.2.840.113549.1.12.1.3"), seq(tlv(0x04, b"salt" * 2), integer(10**8)))
    assert refusal(pem(seq(algorithm, tlv(0x04, os.urandom(64))))).code == (
        KEY_ENCRYPTION_TOO_COSTLY)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01", seq(seq(oid("1.2.3.4"))),
                                 seq(integer(5)), b"\x30\x85\xff\xff\xff\xff\xff"])
def test_malformed_or_unknown_schemes_are_unsupported_not_crashes(der: bytes) -> None:
    with pytest.raises(CertificateError) as caught:
        check_encryption_cost(der)
    assert caught.value.code == "unsupported_key" and caught.value.field == "key_pem"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_an_honest_encrypted_key_at_the_cap_still_opens() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    plain = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    text = subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-iter",
         str(MAX_PBKDF2_ITERATIONS), "-passout", "pass:passphrase"],
        input=plain, capture_output=True, check=True,
    ).stdout.decode("ascii")
    assert parse_private_key(text, "passphrase").public_key() == key.public_key()


def test_openssl_default_encryption_opens() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"pw")).decode("ascii")
    assert parse_private_key(text, "pw").public_key() == key.public_key()
