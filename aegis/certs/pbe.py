"""The cost of opening an encrypted PKCS#8 key, read before anything is decrypted.

A PKCS#8 ``ENCRYPTED PRIVATE KEY`` names its own key derivation and its cost: PBKDF2 with
an iteration count, scrypt with N, r and p, or an old PKCS#5/#12 scheme with an iteration
count. The uploader chooses them, and OpenSSL runs whatever it is told while holding the
interpreter lock: ``openssl pkcs8 -topk8 -v2 aes-256-cbc -iter 40000000`` froze every
listener of the process for seconds. So the parameters are parsed here from the DER (a
few dozen bytes of fixed ASN.1 structure) and anything above the caps below is refused
with a 400 naming the field, before the passphrase is ever tried.

The caps are generous for honest keys: OpenSSL's defaults are 2048 PBKDF2 iterations and
scrypt N=16384, r=8, p=1; OWASP's 2023 advice for PBKDF2-HMAC-SHA256 is 600 000
iterations (about 0.15 s on one core here, the longest the loop may be held by one upload).
An encryption scheme not listed is refused as unsupported rather than handed to OpenSSL
unmeasured.
"""

from __future__ import annotations

from dataclasses import dataclass

from aegis.certs.errors import UNSUPPORTED_KEY, CertificateError

#: Most PBKDF2 (or PKCS#5 v1 / PKCS#12 PBE) iterations accepted.
MAX_PBKDF2_ITERATIONS = 600_000
#: Most scrypt work (N * r * p) and memory (128 * N * r bytes) accepted: twice OpenSSL's
#: default work, 32 MiB of memory.
MAX_SCRYPT_WORK = 2 * 16384 * 8
MAX_SCRYPT_MEMORY = 32 * 1024 * 1024
#: The refusal's code.
KEY_ENCRYPTION_TOO_COSTLY = "key_encryption_too_costly"

_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
# PKCS#5 v1.5 PBES1 and PKCS#12 PBE: parameters SEQUENCE { salt, iterations }.
_SALT_AND_ITERATIONS = frozenset({
    "1.2.840.113549.1.5.1", "1.2.840.113549.1.5.3", "1.2.840.113549.1.5.4",
    "1.2.840.113549.1.5.6", "1.2.840.113549.1.5.10", "1.2.840.113549.1.5.11",
    *(f"1.2.840.113549.1.12.1.{n}" for n in range(1, 7)),
})

_SEQUENCE, _INTEGER, _OCTET_STRING, _OID = 0x30, 0x02, 0x04, 0x06


class _Malformed(ValueError):
    """The DER does not have the expected shape (reported as an unreadable key)."""


@dataclass(frozen=True)
class _Element:
    tag: int
    content: bytes


def _read(data: bytes, offset: int) -> tuple[_Element, int]:
    """One DER element at ``offset``: the element and the offset after it."""
    if offset + 2 > len(data):
        raise _Malformed("truncated")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise _Malformed("bad length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise _Malformed("truncated")
    return _Element(tag, data[offset:offset + length]), offset + length


def _children(element: _Element, tag: int = _SEQUENCE) -> list[_Element]:
    if element.tag != tag:
        raise _Malformed("unexpected type")
    result, offset = [], 0
    while offset < len(element.content):
        child, offset = _read(element.content, offset)
        result.append(child)
    return result


def _oid(element: _Element) -> str:
    if element.tag != _OID or not element.content:
        raise _Malformed("not an object identifier")
    first = element.content[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in element.content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(map(str, parts))


def _integer(element: _Element) -> int:
    if element.tag != _INTEGER or not element.content or len(element.content) > 16:
        raise _Malformed("not a small integer")
    return int.from_bytes(element.content, "big", signed=True)


def _too_costly(name: str, what: str) -> CertificateError:
    return CertificateError(
        KEY_ENCRYPTION_TOO_COSTLY,
        f"{name} is encrypted with {what}; re-encrypt it with fewer (e.g. openssl pkcs8 "
        f"-topk8 -v2 aes-256-cbc -iter 100000) or upload it unencrypted",
        name,
    )


def check_encryption_cost(der: bytes, name: str = "key_pem") -> None:
    """Refuse an ``EncryptedPrivateKeyInfo`` whose key derivation costs more than the caps.

    @raise CertificateError: ``key_encryption_too_costly`` (400, ``field`` ``name``) above a
        cap, ``unsupported_key`` for an encryption scheme not measured here or DER that does
        not have the PKCS#8 shape. Never decrypts anything.
    """
    try:
        top, _ = _read(der, 0)
        algorithm = _children(_children(top)[0])
        scheme = _oid(algorithm[0])
        params = algorithm[1] if len(algorithm) > 1 else None
        if scheme == _PBES2 and params is not None:
            _check_pbes2(_children(params), name)
            return
        if scheme in _SALT_AND_ITERATIONS and params is not None:
            _check_iterations(_integer(_children(params)[1]), name)
            return
    except (_Malformed, IndexError):
        raise CertificateError(
            UNSUPPORTED_KEY, f"{name} is not a readable encrypted PKCS#8 key", name
        ) from None
    raise CertificateError(
        UNSUPPORTED_KEY, f"{name} is encrypted with a scheme Aegis does not support", name
    )


def _check_pbes2(params: list[_Element], name: str) -> None:
    kdf = _children(params[0])
    kdf_oid = _oid(kdf[0])
    kdf_params = _children(kdf[1])
    if kdf_oid == _PBKDF2:
        _check_iterations(_integer(kdf_params[1]), name)
    elif kdf_oid == _SCRYPT:
        n, r, p = (_integer(kdf_params[index]) for index in (1, 2, 3))
        if min(n, r, p) < 1 or n * r * p > MAX_SCRYPT_WORK or 128 * n * r > MAX_SCRYPT_MEMORY:
            raise _too_costly(name, f"scrypt N={n}, r={r}, p={p} (at most N*r*p = "
                                    f"{MAX_SCRYPT_WORK} and 128*N*r = {MAX_SCRYPT_MEMORY} "
                                    "bytes are accepted)")
    else:
        raise _Malformed("unknown key derivation")


def _check_iterations(iterations: int, name: str) -> None:
    if iterations < 1 or iterations > MAX_PBKDF2_ITERATIONS:
        raise _too_costly(name, f"{iterations} key derivation iterations (at most "
                                f"{MAX_PBKDF2_ITERATIONS} are accepted)")
