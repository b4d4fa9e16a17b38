"""AES-256-GCM wrapping of private keys at rest.

Every private key Aegis stores (certificate keys, the ACME account key, API credentials) is
sealed with the master key before it reaches storage:

* a fresh random 96-bit nonce per seal (the GCM nonce size), never reused;
* the *context* string is GCM associated data: it names the record a ciphertext belongs to
  (``certificate:<uid>:key``), so a ciphertext copied into another row fails to open;
* blobs carry a version byte so the format can change without guessing.

Errors never include plaintext, key bytes or ciphertext.
"""

from __future__ import annotations

import hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12
_CHECK_PLAINTEXT = b"aegis master key check v1"
_CHECK_CONTEXT = "aegis:master-key-check"


class MasterKeyError(ValueError):
    """The master key text is malformed (not exactly 64 hex characters)."""


class UnwrapError(Exception):
    """A sealed blob failed to open: wrong key, wrong context, or corrupted bytes."""


@dataclass(frozen=True, repr=False, eq=False)
class MasterKey:
    """A 256-bit master key. Its ``repr`` and ``str`` never show the key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise MasterKeyError("a master key is 32 bytes")

    @classmethod
    def from_hex(cls, text: str) -> MasterKey:
        text = text.strip()
        if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            raise MasterKeyError(
                f"must be exactly 64 hex characters (got {len(text)} characters"
                + ("" if re.fullmatch(r"[0-9a-fA-F]*", text) else ", not all hex")
                + "); generate one with `aegis generate-key`"
            )
        return cls(bytes.fromhex(text))

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(32))

    def hex(self) -> str:
        """The key as 64 hex characters: only for storing it where the operator chose."""
        return self.raw.hex()

    def same_as(self, other: MasterKey) -> bool:
        return hmac.compare_digest(self.raw, other.raw)

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    __str__ = __repr__


class KeyWrapper:
    """Seals and opens small secrets (private keys) with one master key."""

    def __init__(self, key: MasterKey) -> None:
        self._aead = AESGCM(key.raw)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT_V1 + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        """Return the plaintext sealed under ``context``.

        @raise UnwrapError: for any failure; the message names the context only.
        """
        if len(blob) < 1 + _NONCE_BYTES + 16 or blob[:1] != _FORMAT_V1:
            raise UnwrapError(f"sealed data for {context!r} is malformed")
        nonce, ciphertext = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise UnwrapError(f"sealed data for {context!r} failed authentication") from None

    def check_value(self) -> bytes:
        """A blob that only this master key opens: stored to detect a wrong key at start."""
        return self.seal(_CHECK_PLAINTEXT, _CHECK_CONTEXT)

    def matches_check_value(self, blob: bytes) -> bool:
        try:
            return self.open(blob, _CHECK_CONTEXT) == _CHECK_PLAINTEXT
        except UnwrapError:
            return False
