"""Which ACME challenge an authorisation is answered with (``AEGIS_ACME_CHALLENGE``).

* ``http-01`` (default): port 80 answers ``/.well-known/acme-challenge/<token>``.
* ``tls-alpn-01``: the HTTPS listener answers ``acme-tls/1`` handshakes (RFC 8737) — for
  servers whose port 80 is closed or blocked. Wildcards can use neither.
* ``auto``: HTTP-01 first; after an HTTP-01 validation of a name failed (port 80 closed,
  blocked, or forwarded elsewhere), that name's next attempt uses TLS-ALPN-01, and so on
  alternately until one succeeds; the one that worked is kept for the name (in memory, so
  a restart starts with HTTP-01 again).

A CA that does not offer the preferred type gets the other one when it offers that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aegis.sources.acme._transport import AcmeError

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
AUTO = "auto"
CHOICES = (HTTP_01, TLS_ALPN_01, AUTO)


class ValidationFailed(AcmeError):
    """The CA could not validate the challenge (the authorisation became invalid)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def parse_challenge(value: str) -> str:
    if value not in CHOICES:
        raise ValueError("must be http-01, tls-alpn-01 or auto")
    return value


def challenge_token(challenge: Any) -> str:
    """The token of an ``acme.messages.ChallengeBody``, also for types the library no
    longer models (acme 5.x dropped TLS-ALPN-01: it parses as an unrecognised challenge)."""
    jobj = getattr(challenge.chall, "jobj", None)
    if isinstance(jobj, dict):
        token = jobj.get("token")
        if not isinstance(token, str) or not token:
            raise AcmeError("the CA's challenge has no token")
        return token
    return str(challenge.chall.encode("token"))


def challenge_type(challenge: Any) -> str:
    jobj = getattr(challenge.chall, "jobj", None)
    if isinstance(jobj, dict):
        return str(jobj.get("type", ""))
    return str(challenge.chall.typ)


class ChallengeChoice:
    """The preference of one issuer, and (``auto``) what the last attempt per name taught."""

    def __init__(self, setting: str = HTTP_01) -> None:
        self.setting = parse_challenge(setting)
        self._preferred: dict[str, str] = {}

    def order(self, name: str) -> tuple[str, ...]:
        if self.setting == HTTP_01:
            return (HTTP_01,)
        if self.setting == TLS_ALPN_01:
            return (TLS_ALPN_01,)
        first = self._preferred.get(name, HTTP_01)
        return (first, TLS_ALPN_01 if first == HTTP_01 else HTTP_01)

    def pick(self, name: str, offered: Sequence[Any]) -> tuple[Any, str]:
        """The challenge to answer and its type; :class:`AcmeError` if none fits."""
        by_type = {challenge_type(c): c for c in offered}
        for kind in self.order(name):
            if kind in by_type:
                return by_type[kind], kind
        raise AcmeError(f"the CA offers no {' or '.join(self.order(name))} challenge for "
                        f"{name} (it offers {', '.join(sorted(by_type)) or 'none'})")

    def failed(self, name: str, kind: str, error: BaseException) -> None:
        """A validation by ``kind`` failed: with ``auto``, try the other one next time."""
        if self.setting == AUTO and isinstance(error, ValidationFailed):
            self._preferred[name] = TLS_ALPN_01 if kind == HTTP_01 else HTTP_01

    def succeeded(self, name: str, kind: str) -> None:
        if self.setting == AUTO:
            self._preferred[name] = kind


__all__ = [
    "AUTO",
    "CHOICES",
    "HTTP_01",
    "TLS_ALPN_01",
    "ChallengeChoice",
    "ValidationFailed",
    "challenge_token",
    "challenge_type",
    "parse_challenge",
]
