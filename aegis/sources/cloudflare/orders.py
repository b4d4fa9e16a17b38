"""Admin API bodies for Cloudflare requests, validated strictly into frozen values.

Why strict: a typo such as ``requested_valdity`` silently falling back to 15 years is worse
than a 400. Every error names the field (:class:`FieldError`), unknown fields are refused,
``true`` is not a number, and hostnames pass the grammar of :mod:`._hostnames` before a key
is generated or Cloudflare is called. Credentials are held only in :class:`Credentials`,
whose ``repr`` hides them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aegis.sources.cloudflare._hostnames import HostnameError, normalise_hostnames
from aegis.sources.cloudflare.errors import Credentials

ORIGIN_REQUEST_TYPES = {"origin-rsa": "rsa-2048", "origin-ecc": "ecdsa-p256"}
ORIGIN_VALIDITIES = (7, 30, 90, 365, 730, 1095, 5475)
EDGE_AUTHORITIES = ("lets_encrypt", "google", "ssl_com")
EDGE_VALIDATION_METHODS = ("txt", "http", "email")
EDGE_VALIDITIES = (14, 30, 90, 365)
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")


class FieldError(ValueError):
    """A request field is missing or invalid; the admin API answers 400 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class OriginOrder:
    credentials: Credentials
    hostnames: tuple[str, ...]
    request_type: str = "origin-rsa"
    requested_validity: int = 5475
    zone_id: str = ""
    auto_renew: bool = False


@dataclass(frozen=True)
class EdgeOrder:
    credentials: Credentials
    zone_id: str
    hostnames: tuple[str, ...]
    certificate_authority: str = "lets_encrypt"
    validation_method: str = "txt"
    validity_days: int = 90
    cloudflare_branding: bool | None = None


def _only(body: object, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise FieldError("body", "must be a JSON object")
    for name in body:
        if name not in allowed:
            shown = str(name)[:40].encode("ascii", "replace").decode()
            raise FieldError(shown, "unknown field")
    return body


def _choice(body: Mapping[str, Any], name: str, options: tuple[Any, ...], default: Any) -> Any:
    value = body.get(name, default)
    if type(value) is not type(default) or value not in options:
        raise FieldError(name, "must be one of " + ", ".join(map(str, options)))
    return value


def _credential(body: Mapping[str, Any], name: str, method: str) -> Credentials:
    secret = body.get(name)
    if not isinstance(secret, str) or not secret:
        raise FieldError(name, "is required")
    try:
        return Credentials(method, secret)  # type: ignore[arg-type]
    except ValueError:
        raise FieldError(name, "must be printable characters without spaces") from None


def parse_identifier(value: object, field: str, *, required: bool = True) -> str:
    """A Cloudflare zone or pack id: letters, digits and '-' (no length limit below 64)."""
    if value is None or value == "":
        if required:
            raise FieldError(field, "is required")
        return ""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise FieldError(field, "must be a Cloudflare identifier (letters, digits, '-')")
    return value


def _hostnames(body: Mapping[str, Any], name: str, maximum: int) -> tuple[str, ...]:
    if name not in body:
        raise FieldError(name, "is required")
    try:
        return normalise_hostnames(body[name], maximum=maximum)
    except HostnameError as exc:
        raise FieldError(name, str(exc)) from None


_AUTH_FIELDS = {"auth_method", "api_token", "origin_ca_key"}


def _origin_credentials(fields: Mapping[str, Any]) -> Credentials:
    method = _choice(fields, "auth_method", ("api_token", "origin_ca_key"), "api_token")
    other = "origin_ca_key" if method == "api_token" else "api_token"
    if fields.get(other) not in (None, ""):
        raise FieldError(other, f"must not be given when auth_method is {method}")
    return _credential(fields, method, method)


def _flag(fields: Mapping[str, Any], name: str, default: bool | None) -> bool:
    value = fields.get(name, default)
    if value is None:
        raise FieldError(name, "is required")
    if not isinstance(value, bool):
        raise FieldError(name, "must be true or false")
    return value


def parse_origin_order(body: object) -> OriginOrder:
    """``POST /api/v1/certificates/cloudflare-origin``. @raise FieldError."""
    fields = _only(body, {*_AUTH_FIELDS, "hostnames", "request_type", "requested_validity",
                          "zone_id", "auto_renew"})
    credentials = _origin_credentials(fields)
    auto_renew = _flag(fields, "auto_renew", False)
    return OriginOrder(
        credentials=credentials,
        hostnames=_hostnames(fields, "hostnames", 100),
        request_type=_choice(fields, "request_type", tuple(ORIGIN_REQUEST_TYPES), "origin-rsa"),
        requested_validity=_choice(fields, "requested_validity", ORIGIN_VALIDITIES, 5475),
        zone_id=parse_identifier(fields.get("zone_id"), "zone_id", required=False),
        auto_renew=auto_renew,
    )


def parse_renewal_change(body: object) -> Credentials | None:
    """``PATCH /api/v1/certificates/{id}``: ``{"auto_renew": false}``, or ``true`` with the
    Cloudflare credential to renew with. Returns that credential (None: switch off).
    @raise FieldError."""
    fields = _only(body, {*_AUTH_FIELDS, "auto_renew"})
    if not _flag(fields, "auto_renew", None):
        for name in sorted(_AUTH_FIELDS):
            if fields.get(name) not in (None, ""):
                raise FieldError(name, "must not be given when auto_renew is false")
        return None
    return _origin_credentials(fields)


def parse_edge_order(body: object) -> EdgeOrder:
    """``POST /api/v1/certificates/cloudflare-edge``. @raise FieldError."""
    fields = _only(body, {"api_token", "zone_id", "hostnames", "certificate_authority",
                          "validation_method", "validity_days", "cloudflare_branding"})
    branding = fields.get("cloudflare_branding")
    if branding is not None and not isinstance(branding, bool):
        raise FieldError("cloudflare_branding", "must be true or false")
    return EdgeOrder(
        credentials=_credential(fields, "api_token", "api_token"),
        zone_id=parse_identifier(fields.get("zone_id"), "zone_id"),
        hostnames=_hostnames(fields, "hostnames", 50),
        certificate_authority=_choice(fields, "certificate_authority", EDGE_AUTHORITIES,
                                      "lets_encrypt"),
        validation_method=_choice(fields, "validation_method", EDGE_VALIDATION_METHODS, "txt"),
        validity_days=_choice(fields, "validity_days", EDGE_VALIDITIES, 90),
        cloudflare_branding=branding,
    )
