"""Immutable values the store takes and returns.

``*Fields`` is what a caller supplies; ``*Record`` adds what the store assigns (``id`` and
timestamps). Hostnames inside are already normalised by :mod:`aegis.names`; the store keeps
them as given. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from aegis.certs import sources

TLS_VERSIONS = ("1.2", "1.3")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, kw_only=True)
class CertificateFields:
    """A certificate and its sealed private key, with facts derived from the PEM.

    ``key_sealed`` is the AES-256-GCM blob of :class:`aegis.crypto.keywrap.KeyWrapper`, sealed
    under the context ``certificate:<uid>:key``; ``uid`` is chosen by the caller before
    storing, so the ciphertext is bound to this record and no other.
    ``extra`` holds source-specific public facts (e.g. a Cloudflare certificate id): never a
    secret in clear. The one sealed value allowed is
    :data:`aegis.crypto.sealed.SEALED_CREDENTIALS` (renewal credentials, sealed for ``uid``).
    """

    uid: str
    source: str
    domains: tuple[str, ...]
    chain_pem: str
    key_sealed: bytes = field(repr=False)
    issuer: str
    subject: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    key_type: str
    chain_complete: bool
    auto_renew: bool = False
    source_ref: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not sources.known(self.source):
            raise ValueError(f"unknown certificate source {self.source!r}")
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "extra", _frozen(self.extra))


@dataclass(frozen=True, kw_only=True)
class CertificateRecord(CertificateFields):
    id: int
    created_at: datetime
    updated_at: datetime

    def fields(self) -> CertificateFields:
        """The caller-supplied part, e.g. to build a replacement with ``dataclasses.replace``."""
        return CertificateFields(**{
            name: getattr(self, name) for name in CertificateFields.__dataclass_fields__
        })


@dataclass(frozen=True, kw_only=True)
class HostFields:
    """A proxy host: the names it answers for, where it sends traffic, and its TLS settings."""

    domain: str
    aliases: tuple[str, ...] = ()
    upstream: str
    upstream_tls_verify: bool = True
    ssl_mode: str = "none"
    ssl_cert_id: int | None = None
    force_https: bool = False
    hsts_enabled: bool = False
    hsts_max_age: int = 31536000
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False
    tls_min_version: str = "1.2"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ssl_mode not in sources.ssl_modes():
            raise ValueError(f"unknown ssl_mode {self.ssl_mode!r}")
        if self.tls_min_version not in TLS_VERSIONS:
            raise ValueError(f"unknown tls_min_version {self.tls_min_version!r}")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "extra", _frozen(self.extra))

    @property
    def names(self) -> tuple[str, ...]:
        """Every hostname this host answers for: ``domain`` first, then ``aliases``."""
        return (self.domain, *self.aliases)


@dataclass(frozen=True, kw_only=True)
class HostRecord(HostFields):
    id: int
    created_at: datetime
    updated_at: datetime

    def fields(self) -> HostFields:
        return HostFields(**{name: getattr(self, name) for name in HostFields.__dataclass_fields__})


ISSUANCE_STATUSES = ("wanted", "obtaining", "valid", "renewing", "failed", "retired")


@dataclass(frozen=True, kw_only=True)
class IssuanceState:
    """Where the lifecycle of one automatically managed name set stands; what the API shows.

    ``name`` is the set's key: the hostname for one-name certificates (ACME), or
    ``certificate:<uid>`` for a stored certificate renewed in place (Cloudflare Origin with
    automatic renewal). ``names`` are the names ordered (empty means ``(name,)``),
    ``source`` the registered source managing it, ``issuer`` the identity of the issuer (CA
    and account) that made ``certificate_id``.

    ``status`` (see docs/lifecycle.md for the drawing): ``wanted`` (no attempt yet),
    ``obtaining`` (an attempt runs, no certificate yet), ``valid`` (``certificate_id`` is
    current), ``renewing`` (an attempt runs while the old certificate keeps serving),
    ``failed`` (the last attempt failed; ``next_attempt_at`` says when the next one may
    start), ``retired`` (no host wants it any more: not renewed, kept for the record).
    ``failures`` counts consecutive failures (the backoff step); ``recent_failures`` the
    failure times within the CA's failed-validation window. ``last_attempt_at`` is when the
    current or last attempt started. ``order_url`` and ``pending_key_sealed`` describe an
    order in flight so a restart resumes it instead of ordering again; the key is sealed
    like every private key (never shown).
    """

    name: str
    status: str = "wanted"
    certificate_id: int | None = None
    failures: int = 0
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    renews_at: datetime | None = None
    order_url: str | None = None
    pending_key_sealed: bytes | None = field(default=None, repr=False)
    source: str = ""
    names: tuple[str, ...] = ()
    issuer: str | None = None
    recent_failures: tuple[datetime, ...] = ()
    retired_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in ISSUANCE_STATUSES:
            raise ValueError(f"unknown issuance status {self.status!r}")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "recent_failures", tuple(self.recent_failures))

    @property
    def ordered_names(self) -> tuple[str, ...]:
        """The names a certificate for this set must cover."""
        return self.names or (self.name,)


@dataclass(frozen=True, kw_only=True)
class AcmeChallenge:
    """An HTTP-01 answer being served: ``token`` → ``key_authorization`` for ``name``.

    Public by design (the CA fetches it over plain HTTP); kept so a restart mid-order still
    answers the CA's validation requests.
    """

    token: str
    key_authorization: str
    name: str
    created_at: datetime
