"""The one error type certificate validation raises.

Every refusal carries a stable machine ``code`` (for clients and tests), a human ``message``
(safe to show: it never contains key material, passphrases or PEM bodies) and the request
``field`` it is about, so the admin API maps it to a 400 body without guessing.
"""

from __future__ import annotations

# Stable codes. Clients may match on them; change only by adding.
INVALID_PEM = "invalid_pem"
KEY_MISMATCH = "key_mismatch"
PASSPHRASE_REQUIRED = "passphrase_required"  # noqa: S105  # nosec B105 # an error code
WRONG_PASSPHRASE = "wrong_passphrase"  # noqa: S105  # nosec B105 # an error code
UNSUPPORTED_KEY = "unsupported_key"
WEAK_KEY = "weak_key"
NO_SAN = "no_san"
DOMAINS_NOT_COVERED = "domains_not_covered"
INVALID_HOSTNAME = "invalid_hostname"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
CHAIN_UNRELATED = "chain_unrelated"
NAMES_CHANGED = "names_changed"
NOT_REPLACEABLE = "not_replaceable"
INVALID_FIELD = "invalid_field"


class CertificateError(ValueError):
    """An uploaded certificate, key or request field is unusable.

    ``status`` is the HTTP status the admin API answers with: 400 for every refusal of the
    input (the ``code`` says which), 409 when the input is fine but the stored state forbids
    the change (replacing a certificate Aegis renews itself).
    """

    def __init__(
        self, code: str, message: str, field: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status

    def __repr__(self) -> str:
        return f"CertificateError({self.code!r}, {self.message!r}, field={self.field!r})"
