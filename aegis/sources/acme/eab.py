"""External account binding (RFC 8555 §7.3.4): CAs that only register known customers.

ZeroSSL, Google Trust Services, SSL.com and many private CAs hand out a key identifier and
an HMAC key; the newAccount request then carries a JWS over our account's public key,
signed with that HMAC key (HS256), naming the kid and the newAccount URL. The HMAC key is
needed only for that one request: Aegis keeps it in its settings (``AEGIS_ACME_EAB_KID``,
``AEGIS_ACME_EAB_HMAC_KEY``) and in memory, never in the store, a log, an error or a repr.

Accounts are kept per (directory, kid): the account URL is remembered under the directory
and the kid, so a new kid registers anew instead of reusing an account bound to another.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import Any

from acme import messages
from josepy.b64 import b64decode
from josepy.jwk import JWK


class EabError(ValueError):
    """The EAB settings are incomplete or malformed (the message names the setting)."""


def parse_hmac_key(value: str) -> str:
    """``AEGIS_ACME_EAB_HMAC_KEY``: base64url (padding optional), at least 16 bytes."""
    text = value.strip()
    try:
        raw = b64decode(text)
    except (binascii.Error, ValueError, TypeError):
        raise EabError("must be the CA's HMAC key in base64url") from None
    if len(raw) < 16:
        raise EabError("is too short for an HMAC key (the CA's key is at least 16 bytes)")
    return text


@dataclass(frozen=True)
class ExternalAccount:
    """A CA's key identifier and HMAC key. The key never appears in ``repr``."""

    kid: str
    hmac_key: str = field(repr=False)

    def binding(self, account_key: JWK, new_account_url: str) -> dict[str, Any]:
        """The ``externalAccountBinding`` member of the newAccount payload."""
        return messages.ExternalAccountBinding.from_data(
            account_key.public_key(), self.kid, self.hmac_key,
            {"newAccount": new_account_url},  # type: ignore[arg-type]
        )

    def account_scope(self, directory_url: str) -> str:
        """Where the account URL is remembered: per directory and kid."""
        return f"{directory_url} eab:{self.kid}"


def external_account(kid: str, hmac_key: str) -> ExternalAccount | None:
    """Both settings or neither; raises :class:`EabError` naming the missing one."""
    if not kid and not hmac_key:
        return None
    if not kid:
        raise EabError("AEGIS_ACME_EAB_HMAC_KEY is set without AEGIS_ACME_EAB_KID")
    if not hmac_key:
        raise EabError("AEGIS_ACME_EAB_KID is set without AEGIS_ACME_EAB_HMAC_KEY")
    return ExternalAccount(kid, parse_hmac_key(hmac_key))


__all__ = ["EabError", "ExternalAccount", "external_account", "parse_hmac_key"]
