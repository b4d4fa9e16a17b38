"""Cloudflare credentials and errors: values that must never leak a secret.

Why a module of their own: the admin routes, the services and the client all handle them,
and the guarantees (no secret in ``repr``/``str``, no credential in an error message, even
when Cloudflare echoes it back) are easiest to check in one small place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.sealed import open_credentials, seal_credentials

#: Cloudflare error codes that mean "try again": 1100 "Failed to write certificate to
#: Database" (Origin CA) and 971 "Please wait and consider throttling your request speed".
TRANSIENT_ERROR_CODES = frozenset({1100, 971})
AuthMethod = Literal["api_token", "origin_ca_key"]


@dataclass(frozen=True, repr=False)
class Credentials:
    """How to authenticate one call. The secret never appears in ``repr`` or ``str``."""

    method: AuthMethod
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.method not in ("api_token", "origin_ca_key"):
            raise ValueError("auth method must be 'api_token' or 'origin_ca_key'")
        # Printable ASCII without spaces: anything else could split or forge a header.
        if not 1 <= len(self.secret) <= 1024 or not all(
            "\x20" < ch < "\x7f" for ch in self.secret
        ):
            raise ValueError("the credential must be 1-1024 printable characters without spaces")

    def headers(self) -> dict[bytes, list[bytes]]:
        if self.method == "api_token":
            return {b"Authorization": [b"Bearer " + self.secret.encode("ascii")]}
        return {b"X-Auth-User-Service-Key": [self.secret.encode("ascii")]}

    def seal(self, wrapper: KeyWrapper, uid: str) -> str:
        """This credential sealed by the master key for certificate ``uid`` (text)."""
        plain = json.dumps({"method": self.method, "secret": self.secret})
        return seal_credentials(wrapper, uid, plain.encode("utf-8"))

    @classmethod
    def unseal(cls, wrapper: KeyWrapper, uid: str, value: str) -> Credentials:
        """The credential :meth:`seal` kept for ``uid``.

        @raise ValueError: it does not open (another uid or master key) or is malformed.
        """
        try:
            data = json.loads(open_credentials(wrapper, uid, value))
            return cls(data["method"], data["secret"])
        except ValueError:
            raise
        except Exception:  # UnwrapError, KeyError, TypeError, binascii.Error
            raise ValueError("the sealed credential does not open") from None

    def __repr__(self) -> str:
        return f"Credentials(method={self.method!r}, secret=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class CloudflareMessage:
    """One entry of an envelope's ``errors``: Cloudflare's code and text."""

    code: int
    message: str


ErrorKind = Literal["rejected", "auth", "unavailable", "timeout", "bad_response"]
#: Codes meaning "the credential was refused" (the admin sees ``cloudflare_auth``).
AUTH_ERROR_CODES = frozenset({10000, 10001, 6003, 6111, 6100, 6101, 6102, 6103, 9103, 9106, 9109,
                              1016})


class CloudflareError(Exception):
    """A Cloudflare call failed. Carries no credential, by construction.

    ``kind`` drives the admin API's answer: ``rejected``/``auth`` (Cloudflare refused the
    input or the credential: 400; an unknown object: 404), ``unavailable`` (429/5xx/
    transient past the retry budget, or unreachable: 502), ``timeout`` (504),
    ``bad_response`` (not a Cloudflare envelope: 502).
    """

    def __init__(
        self,
        kind: ErrorKind,
        summary: str,
        *,
        http_status: int | None = None,
        errors: tuple[CloudflareMessage, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind
        self.summary = summary
        self.http_status = http_status
        self.errors = errors
        self.retry_after = retry_after
        # Epoch seconds before which the lifecycle engine must not try again (its issuers'
        # contract); set by the Origin CA issuer from ``retry_after``.
        self.retry_at: float | None = None
        detail = "; ".join(f"{e.code}: {e.message}" for e in errors)
        super().__init__(f"{summary} ({detail})" if detail else summary)

    @property
    def admin_status(self) -> int:
        """The HTTP status the admin API answers with (Cloudflare's 404 stays a 404)."""
        if self.kind == "rejected" and self.http_status == 404:
            return 404
        return {"rejected": 400, "auth": 400, "timeout": 504}.get(self.kind, 502)

    def as_json(self) -> dict[str, Any]:
        """The admin API's error body: our summary plus Cloudflare's own codes and messages."""
        body: dict[str, Any] = {
            "error": "cloudflare_" + self.kind,
            "message": str(self),
            "cloudflare_errors": [{"code": e.code, "message": e.message} for e in self.errors],
        }
        if self.http_status is not None:
            body["cloudflare_status"] = self.http_status
        if self.retry_after is not None:
            body["retry_after"] = int(self.retry_after + 0.999)
        return body


def messages(raw: object) -> tuple[CloudflareMessage, ...]:
    """The well-formed entries of an envelope's ``errors`` (bounded in number and length)."""
    if not isinstance(raw, list):
        return ()
    found = []
    for item in raw[:20]:
        if isinstance(item, dict) and isinstance(item.get("code"), int):
            found.append(CloudflareMessage(item["code"], str(item.get("message", ""))[:500]))
    return tuple(found)


def scrubbed(error: CloudflareError, secret: str) -> CloudflareError:
    """The same error with any echo of the credential removed from Cloudflare's messages."""
    if not any(secret in e.message for e in error.errors) and secret not in error.summary:
        return error
    errors = tuple(
        CloudflareMessage(e.code, e.message.replace(secret, "<redacted>")) for e in error.errors
    )
    return CloudflareError(
        error.kind, error.summary.replace(secret, "<redacted>"), http_status=error.http_status,
        errors=errors, retry_after=error.retry_after,
    )
