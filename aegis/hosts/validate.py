"""Host settings from the admin API: one schema, one set of cross-field rules.

``POST`` and ``PUT`` take a whole host (omitted fields get their defaults); ``PATCH`` changes
only the fields it names. All three end in :func:`host_request`, so the rules cannot differ:

* ``domain`` and ``aliases`` go through :mod:`aegis.names` (IDN, case, trailing dot; a
  wildcard only as a whole left-most label);
* ``upstream`` through :mod:`aegis.hosts.upstream`;
* ``ssl_mode`` ``custom`` needs a certificate: ``ssl_cert_id`` or inline ``ssl_cert_pem`` +
  ``ssl_key_pem``; the other modes take none;
* ``letsencrypt`` cannot cover wildcard names (HTTP-01 cannot validate them);
* ``hsts_preload`` needs ``hsts_enabled``, ``hsts_max_age >= 31536000`` and
  ``hsts_include_subdomains``: preloading is practically irreversible;
* ``tls_min_version`` is ``1.2`` or ``1.3``; older versions are refused (RFC 8996);
* ``acme_profile`` (kept in the host's ``extra``) is a profile name, or null for the default;
  the API also checks it against the profiles the ACME CA lists, once its directory is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from aegis.admin._errors import ApiError, invalid
from aegis.admin._json import Field, ObjectSchema
from aegis.certs import sources
from aegis.certs.sources import MODE_BOUND
from aegis.hosts.upstream import InvalidUpstream, parse_upstream
from aegis.names import InvalidHostname, is_wildcard, normalise
from aegis.sources.acme.profiles import PROFILE_KEY, ProfileError, parse_profile
from aegis.store.records import TLS_VERSIONS, HostFields

MAX_ALIASES = 100
PRELOAD_MIN_AGE = 31536000
MAX_HSTS_AGE = 2**31 - 1

HOST_SCHEMA = ObjectSchema({
    "domain": Field("string", max_length=1024, min_length=1,
                    description="The host's main name."),
    "aliases": Field("array", max_length=MAX_ALIASES,
                     items=Field("string", max_length=1024, min_length=1),
                     description="Further names answered by this host."),
    "upstream": Field("string", max_length=2048,
                      description="Where requests go: http(s)://host[:port]."),
    "upstream_tls_verify": Field("boolean", description="Verify an https upstream's "
                                 "certificate against the system trust store (default true)."),
    "ssl_mode": Field("string", enum=sources.ssl_modes(),
                      description=", ".join(sources.ssl_modes()[:-1]) + " or "
                      + sources.ssl_modes()[-1] + "."),
    "ssl_cert_id": Field("integer", nullable=True,
                         description="A stored certificate to serve (ssl_mode custom)."),
    "ssl_cert_pem": Field("string", max_length=256 * 1024, min_length=1,
                          description="Inline certificate chain (PEM); stored as a certificate."),
    "ssl_key_pem": Field("string", max_length=64 * 1024, min_length=1,
                         description="Inline private key (PEM) for ssl_cert_pem; never returned."),
    "ssl_key_passphrase": Field("string", max_length=1024,
                                description="Passphrase of an encrypted ssl_key_pem."),
    "force_https": Field("boolean", description="301 redirect HTTP to HTTPS."),
    "hsts_enabled": Field("boolean", description="Send Strict-Transport-Security."),
    "hsts_max_age": Field("integer", description="HSTS max-age in seconds."),
    "hsts_include_subdomains": Field("boolean", description="includeSubDomains directive."),
    "hsts_preload": Field("boolean", description="preload directive."),
    "tls_min_version": Field("string", max_length=8, description="1.2 (default) or 1.3."),
    "acme_profile": Field("string", max_length=64, nullable=True,
                          description="ACME profile of this host's certificates (Let's "
                          "Encrypt: classic, tlsserver, shortlived); null: AEGIS_ACME_PROFILE."),
})

_HOST_FIELD_NAMES = {f.name for f in fields(HostFields)}


@dataclass(frozen=True)
class InlineCertificate:
    cert_pem: str
    key_pem: str
    passphrase: str | None


@dataclass(frozen=True)
class HostRequest:
    """A validated host. With ``inline`` set, the caller stores that certificate first and
    binds ``fields.ssl_cert_id`` to it."""

    fields: HostFields
    inline: InlineCertificate | None


def _name(value: str, field_name: str) -> str:
    try:
        return normalise(value)
    except InvalidHostname as exc:
        raise invalid(field_name, str(exc), "invalid_hostname") from None


def _unprocessable(field_name: str, message: str, code: str = "invalid_combination") -> ApiError:
    return invalid(field_name, message, code, status=422)


def host_request(body: Mapping[str, Any], current: HostFields | None = None) -> HostRequest:
    """Validate ``body`` (already checked against :data:`HOST_SCHEMA`).

    ``current`` is the stored host for ``PATCH`` (fields absent from ``body`` keep their
    values), None for ``POST``/``PUT`` (absent fields take their defaults).
    @raise ApiError: 400 for a bad field, 422 for a bad combination, naming the field.
    """
    values: dict[str, Any] = {} if current is None else {
        name: getattr(current, name) for name in _HOST_FIELD_NAMES
    }
    for name in ("domain", "upstream"):
        if current is None and name not in body:
            raise invalid(name, f"{name} is required", "missing_field")
    if "domain" in body:
        values["domain"] = _name(body["domain"], "domain")
    if "aliases" in body:
        values["aliases"] = tuple(
            _name(alias, f"aliases[{index}]") for index, alias in enumerate(body["aliases"])
        )
    if "upstream" in body:
        try:
            values["upstream"] = parse_upstream(body["upstream"]).url
        except InvalidUpstream as exc:
            raise invalid("upstream", str(exc), "invalid_upstream") from None
    for name in ("upstream_tls_verify", "ssl_mode", "force_https", "hsts_enabled",
                 "hsts_max_age", "hsts_include_subdomains", "hsts_preload"):
        if name in body:
            values[name] = body[name]
    if "tls_min_version" in body:
        version = body["tls_min_version"]
        if version in ("1.0", "1.1"):
            raise invalid("tls_min_version", f"TLS {version} is deprecated (RFC 8996) and not "
                          "offered by Aegis; use 1.2 or 1.3", "insecure_tls_version")
        if version not in TLS_VERSIONS:
            raise invalid("tls_min_version", "tls_min_version must be 1.2 or 1.3",
                          "invalid_choice")
        values["tls_min_version"] = version
    if current is not None and "ssl_mode" in body and body["ssl_mode"] != MODE_BOUND and (
        "ssl_cert_id" not in body
    ):
        values["ssl_cert_id"] = None  # switching away from custom frees the binding
    if "ssl_cert_id" in body:
        values["ssl_cert_id"] = body["ssl_cert_id"]
    if "acme_profile" in body:
        values["extra"] = _with_profile(values.get("extra") or {}, body["acme_profile"])
    inline = _inline_certificate(body)
    fields_ = HostFields(**values)
    _check_names(fields_)
    _check_ssl(fields_, inline)
    _check_hsts(fields_)
    return HostRequest(fields_, inline)


def _with_profile(extra: Mapping[str, Any], profile: str | None) -> dict[str, Any]:
    updated = {key: value for key, value in extra.items() if key != PROFILE_KEY}
    if profile is not None:
        try:
            updated[PROFILE_KEY] = parse_profile(profile)
        except ProfileError as exc:
            raise invalid("acme_profile", str(exc), "invalid_profile") from None
    return updated


def _inline_certificate(body: Mapping[str, Any]) -> InlineCertificate | None:
    cert, key = body.get("ssl_cert_pem"), body.get("ssl_key_pem")
    if cert is None and key is None:
        if "ssl_key_passphrase" in body:
            raise _unprocessable("ssl_key_passphrase", "ssl_key_passphrase needs ssl_key_pem")
        return None
    if cert is None:
        raise _unprocessable("ssl_cert_pem", "ssl_key_pem needs ssl_cert_pem")
    if key is None:
        raise _unprocessable("ssl_key_pem", "ssl_cert_pem needs ssl_key_pem")
    return InlineCertificate(cert, key, body.get("ssl_key_passphrase"))


def _check_names(host: HostFields) -> None:
    if len(set(host.names)) != len(host.names):
        raise _unprocessable("aliases", "a name appears twice in domain and aliases")


def _check_ssl(host: HostFields, inline: InlineCertificate | None) -> None:
    if host.ssl_mode == MODE_BOUND:
        if host.ssl_cert_id is None and inline is None:
            raise _unprocessable("ssl_cert_id", f"ssl_mode {MODE_BOUND} needs ssl_cert_id or "
                                 "ssl_cert_pem and ssl_key_pem")
        if host.ssl_cert_id is not None and inline is not None:
            raise _unprocessable("ssl_cert_pem", "give ssl_cert_id or an inline certificate, "
                                 "not both")
        return
    if host.ssl_cert_id is not None or inline is not None:
        field_name = "ssl_cert_id" if host.ssl_cert_id is not None else "ssl_cert_pem"
        raise _unprocessable(field_name, f"a certificate is only used with ssl_mode "
                             f"{MODE_BOUND} (this host has ssl_mode {host.ssl_mode})")
    automatic = sources.for_mode(host.ssl_mode)
    if automatic is not None and not automatic.wildcards:
        for index, name in enumerate(host.names):
            if is_wildcard(name):
                field_name = "domain" if index == 0 else f"aliases[{index - 1}]"
                raise _unprocessable(field_name, f"{automatic.label} cannot issue wildcard "
                                     "names through the HTTP-01 challenge; upload a wildcard "
                                     f"certificate and use ssl_mode {MODE_BOUND}")


def _check_hsts(host: HostFields) -> None:
    if not 0 <= host.hsts_max_age <= MAX_HSTS_AGE:
        raise invalid("hsts_max_age", f"hsts_max_age must be between 0 and {MAX_HSTS_AGE}",
                      "out_of_range")
    if host.hsts_preload and not (
        host.hsts_enabled and host.hsts_include_subdomains
        and host.hsts_max_age >= PRELOAD_MIN_AGE
    ):
        raise _unprocessable(
            "hsts_preload",
            "hsts_preload needs hsts_enabled, hsts_include_subdomains and hsts_max_age >= "
            f"{PRELOAD_MIN_AGE}. Preloading is practically irreversible: browsers hard-code "
            "HTTPS for the domain and every subdomain, and removal takes months.",
        )


def with_certificate(request: HostRequest, cert_id: int) -> HostFields:
    """The host bound to the certificate stored from its inline PEM."""
    return replace(request.fields, ssl_cert_id=cert_id)
