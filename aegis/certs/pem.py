"""Strict PEM parsing of uploaded certificates and private keys (pure, no I/O).

Why our own scanner rather than ``load_pem_x509_certificates`` alone: an upload must fail
with a message that names the field and the fault (bad base64, a missing END line, DER bytes,
a key pasted into the certificate field, two keys), and it must never echo PEM bodies back,
since a wrongly pasted field may hold a private key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from aegis.certs.errors import (
    INVALID_FIELD,
    INVALID_PEM,
    PASSPHRASE_REQUIRED,
    UNSUPPORTED_KEY,
    WEAK_KEY,
    WRONG_PASSPHRASE,
    CertificateError,
)
from aegis.certs.pbe import check_encryption_cost

MAX_PEM_CHARS = 256 * 1024
MAX_CERTIFICATES = 16
MAX_BLOCKS = MAX_CERTIFICATES + 4
MIN_RSA_BITS = 2048
CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----")
_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----(.*?)-----END \1-----", re.S)
_HEADER = re.compile(r"[A-Za-z0-9-]+:")


@dataclass(frozen=True)
class _Block:
    label: str
    headers: tuple[str, ...]
    body: str = field(repr=False)
    text: str = field(repr=False)


def _field_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise CertificateError(INVALID_FIELD, f"{name} must be a string of PEM text", name)
    if len(value) > MAX_PEM_CHARS:
        raise CertificateError(
            INVALID_PEM, f"{name} is longer than {MAX_PEM_CHARS} characters", name
        )
    if not value.isascii() or "\x00" in value:
        raise CertificateError(
            INVALID_PEM,
            f"{name} is not PEM text (binary or non-ASCII data; DER must be converted to PEM,"
            " e.g. openssl x509 -inform der)",
            name,
        )
    return value


def _blocks(text: str, name: str) -> list[_Block]:
    """Every ``BEGIN``/``END`` block; refuses unmatched markers and headers where unexpected."""
    begins = len(_BEGIN.findall(text))
    if begins > MAX_BLOCKS:
        # Checked before matching: each BEGIN without END makes the block pattern scan to
        # the end of the text, quadratic in the number of markers.
        raise CertificateError(INVALID_PEM, f"{name} holds more than {MAX_BLOCKS} PEM blocks", name)
    found: list[_Block] = []
    for match in _BLOCK.finditer(text):
        label, inner = match.group(1), match.group(2)
        headers: list[str] = []
        lines = inner.strip().splitlines()
        while lines and _HEADER.match(lines[0]) and label in KEY_LABELS:
            headers.append(lines.pop(0).strip())
        if headers and lines and not lines[0].strip():
            lines.pop(0)
        found.append(_Block(label, tuple(headers), "".join("".join(lines).split()), match.group(0)))
    if begins != len(found) or text.count("-----END ") != len(found):
        raise CertificateError(
            INVALID_PEM,
            f"{name} has a BEGIN line without its matching END line (or the reverse)",
            name,
        )
    if not found:
        raise CertificateError(INVALID_PEM, f"{name} contains no PEM block", name)
    return found


def _der(block: _Block, name: str, what: str) -> bytes:
    try:
        return base64.b64decode(block.body, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError(INVALID_PEM, f"{name}: {what} is not valid base64", name) from None


def parse_certificates(text: object, name: str = "cert_pem") -> list[x509.Certificate]:
    """Every CERTIFICATE block of ``text``, in the order given.

    @raise CertificateError: code ``invalid_pem`` naming ``name``, for any malformed input or
        any block that is not a certificate.
    """
    blocks = _blocks(_field_text(text, name), name)
    certificates: list[x509.Certificate] = []
    for position, block in enumerate(blocks, 1):
        if block.label in KEY_LABELS:
            raise CertificateError(
                INVALID_PEM, f"{name} contains a private key; send the key in key_pem", name
            )
        if block.label != "CERTIFICATE":
            raise CertificateError(
                INVALID_PEM,
                f"{name} block {position} is a {block.label}, not a CERTIFICATE",
                name,
            )
        der = _der(block, name, f"certificate {position}")
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except ValueError:
            raise CertificateError(
                INVALID_PEM,
                f"{name}: certificate {position} is not a valid X.509 certificate",
                name,
            ) from None
    if len(certificates) > MAX_CERTIFICATES:
        raise CertificateError(
            INVALID_PEM, f"{name} holds more than {MAX_CERTIFICATES} certificates", name
        )
    return certificates


def parse_private_key(
    text: object, passphrase: object = None, name: str = "key_pem"
) -> CertificateIssuerPrivateKeyTypes:
    """The one private key in ``text`` (RSA >= 2048 bits, ECDSA P-256/384/521 or Ed25519).

    An encrypted key (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or legacy ``Proc-Type: 4,ENCRYPTED``)
    needs ``passphrase``; a passphrase given for a plain key is ignored. Nothing prompts.
    A PKCS#8 key's key derivation cost is checked first (:mod:`aegis.certs.pbe`): one
    with millions of iterations would hold the interpreter lock, and so every listener.

    @raise CertificateError: ``invalid_pem``, ``passphrase_required``, ``wrong_passphrase``,
        ``key_encryption_too_costly``, ``unsupported_key`` or ``weak_key``; the message
        never contains key material.
    """
    if passphrase is not None and not isinstance(passphrase, str):
        raise CertificateError(INVALID_FIELD, "key_passphrase must be a string", "key_passphrase")
    blocks = _blocks(_field_text(text, name), name)
    keys = [block for block in blocks if block.label in KEY_LABELS]
    others = [b.label for b in blocks if b.label not in KEY_LABELS and b.label != "EC PARAMETERS"]
    if others:
        raise CertificateError(
            INVALID_PEM,
            f"{name} must hold only the private key (found a {others[0]} block)",
            name,
        )
    if len(keys) != 1:
        raise CertificateError(
            INVALID_PEM,
            f"{name} holds {len(keys)} private keys; give exactly one"
            if keys
            else f"{name} contains no private key",
            name,
        )
    block = keys[0]
    encrypted = block.label == "ENCRYPTED PRIVATE KEY" or any(
        "ENCRYPTED" in header for header in block.headers
    )
    if not block.headers:
        _der(block, name, "the private key")
    if encrypted and not passphrase:
        raise CertificateError(
            PASSPHRASE_REQUIRED,
            "the private key is encrypted: a passphrase is needed (send it as key_passphrase)",
            "key_passphrase",
        )
    if block.label == "ENCRYPTED PRIVATE KEY":
        check_encryption_cost(_der(block, name, "the private key"), name)  # before any KDF
    password = passphrase.encode("utf-8") if encrypted and isinstance(passphrase, str) else None
    try:
        key = serialization.load_pem_private_key(block.text.encode("ascii"), password=password)
    except UnsupportedAlgorithm:
        raise CertificateError(
            UNSUPPORTED_KEY, f"{name} uses an unsupported algorithm", name
        ) from None
    except (ValueError, TypeError):
        if encrypted:
            raise CertificateError(
                WRONG_PASSPHRASE,
                "the passphrase does not open the private key",
                "key_passphrase",
            ) from None
        raise CertificateError(INVALID_PEM, f"{name} is not a valid private key", name) from None
    return _supported(key, name)


def _supported(key: object, name: str) -> CertificateIssuerPrivateKeyTypes:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                WEAK_KEY,
                f"RSA keys need at least {MIN_RSA_BITS} bits (got {key.key_size})",
                name,
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in CURVES:
            raise CertificateError(
                UNSUPPORTED_KEY, f"the ECDSA curve {key.curve.name} is not supported", name
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise CertificateError(
        UNSUPPORTED_KEY,
        f"{name}: only RSA, ECDSA (P-256, P-384, P-521) and Ed25519 keys are supported",
        name,
    )


def certificates_pem(certificates: Sequence[x509.Certificate]) -> str:
    """The certificates as one PEM text, in the order given."""
    return "".join(
        cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certificates
    )
