"""``/api/v1/hosts``: proxy hosts (the spec's "Host SSL Settings" and "Assigning
Certificates to Hosts").

Every write is one store transaction (an inline certificate and the host bound to it are
stored together or not at all), followed by a proxy reload: the next handshake and request
see the change, open connections are untouched. A host in an automatic ``ssl_mode`` asks the
lifecycle engine for its certificates as soon as it is saved, so the first visitor already
gets one.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.web.iweb import IRequest

from aegis.admin._errors import invalid
from aegis.admin._lifecycle import issuance_for_name
from aegis.admin._routing import AdminContext, JsonResponse, RouteTable
from aegis.certs import sources
from aegis.certs.errors import CertificateError
from aegis.certs.validate import ValidatedCertificate, validate_upload
from aegis.hosts.validate import HOST_SCHEMA, HostRequest, host_request
from aegis.interfaces import IStoreTransaction
from aegis.names import matches
from aegis.sources.acme.profiles import PROFILE_KEY, ProfileError, check_offered, host_profile
from aegis.store.records import CertificateRecord, HostFields, HostRecord
from aegis.timefmt import to_text

routes = RouteTable(tag="hosts")

HOST_OBJECT: dict[str, Any] = {"type": "object", "description": "A proxy host."}


def _now(ctx: AdminContext) -> datetime:
    return datetime.fromtimestamp(ctx.clock.seconds(), UTC)


def host_object(ctx: AdminContext, host: HostRecord) -> dict[str, Any]:
    """The API shape of a host, with which certificate its main name is served now."""
    document: dict[str, Any] = {
        "id": host.id, "domain": host.domain, "aliases": list(host.aliases),
        "upstream": host.upstream, "upstream_tls_verify": host.upstream_tls_verify,
        "ssl_mode": host.ssl_mode, "ssl_cert_id": host.ssl_cert_id,
        "force_https": host.force_https, "hsts_enabled": host.hsts_enabled,
        "hsts_max_age": host.hsts_max_age,
        "hsts_include_subdomains": host.hsts_include_subdomains,
        "hsts_preload": host.hsts_preload, "tls_min_version": host.tls_min_version,
        "acme_profile": host_profile(host),
        "created_at": to_text(host.created_at), "updated_at": to_text(host.updated_at),
    }
    if ctx.lifecycle is not None and sources.for_mode(host.ssl_mode) is not None:
        document["issuance"] = [issuance_for_name(ctx.lifecycle, name) for name in host.names]
    if ctx.selection is not None:
        chosen = ctx.selection.current().select(host.domain, _now(ctx), want=False)
        document["serving_certificate"] = {
            "step": chosen.step, "certificate_id": chosen.certificate.id,
            "source": chosen.certificate.source,
        }
    return document


def _uncovered(certificate: CertificateRecord, host: HostFields) -> list[str]:
    return [name for name in host.names
            if not any(matches(pattern, name) for pattern in certificate.domains)]


def _check_binding(txn: IStoreTransaction, host: HostFields) -> None:
    if host.ssl_cert_id is None:
        return
    try:
        certificate = txn.get_certificate(host.ssl_cert_id)
    except Exception:
        raise invalid("ssl_cert_id", f"no certificate with id {host.ssl_cert_id}",
                      "unknown_certificate", status=422) from None
    missing = _uncovered(certificate, host)
    if missing:
        raise invalid("ssl_cert_id", f"certificate {certificate.id} does not cover "
                      f"{', '.join(missing)} (it covers {', '.join(certificate.domains)})",
                      "domains_not_covered", status=422)


async def _inline(ctx: AdminContext, request: HostRequest) -> ValidatedCertificate | None:
    inline = request.inline
    if inline is None:
        return None
    try:
        return await deferToThread(
            validate_upload, inline.cert_pem, inline.key_pem, now=_now(ctx),
            domains=list(request.fields.names), key_passphrase=inline.passphrase,
        )
    except CertificateError as exc:
        renamed = {"cert_pem": "ssl_cert_pem", "key_pem": "ssl_key_pem",
                   "key_passphrase": "ssl_key_passphrase"}  # nosec B105 # field names
        field_name = renamed.get(exc.field or "", exc.field)
        raise invalid(field_name, exc.message, exc.code) from None


def _check_profile(ctx: AdminContext, host: HostFields) -> None:
    """A profile the host's CA does not list is refused (when its directory is known)."""
    profile = host.extra.get(PROFILE_KEY)
    spec = sources.for_mode(host.ssl_mode)
    if not isinstance(profile, str) or ctx.lifecycle is None or spec is None:
        return
    known = getattr(ctx.lifecycle.issuer_of(spec.name), "known_profiles", None)
    try:
        check_offered(profile, known() if callable(known) else None)
    except ProfileError as exc:
        raise invalid("acme_profile", str(exc), "unknown_profile", status=422) from None


async def _save(ctx: AdminContext, request: HostRequest, host_id: int | None) -> HostRecord:
    _check_profile(ctx, request.fields)
    validated = await _inline(ctx, request)
    sealed = None if validated is None else validated.to_fields(ctx.wrapper)

    def work(txn: IStoreTransaction) -> HostRecord:
        fields = request.fields
        if sealed is not None:
            fields = replace(fields, ssl_cert_id=txn.add_certificate(sealed).id)
        _check_binding(txn, fields)
        if host_id is None:
            return txn.add_host(fields)
        return txn.replace_host(host_id, fields)

    host = await ctx.store.transact(work)
    await _published(ctx)
    return host


async def _published(ctx: AdminContext) -> None:
    """Make the change visible. The reload also has the lifecycle engine re-read the demand,
    which orders what an automatic host is missing right away; that refresh is awaited here
    (refreshes are serialised, so this one runs after it) so the answer's ``issuance``
    shows the host's names as the engine now sees them, not the demand from before."""
    if ctx.proxy is not None:
        await ctx.proxy.reload()
    if ctx.lifecycle is not None:
        # The host is stored either way: a failed refresh is logged by the reload's own
        # refresh and the engine's timer catches up; the answer must not turn into a 5xx.
        with contextlib.suppress(Exception):
            await ctx.lifecycle.refresh()


@routes.route("GET", "/api/v1/hosts", summary="List proxy hosts",
              responses={200: ("Every proxy host", {"type": "array", "items": HOST_OBJECT})})
async def list_hosts(ctx: AdminContext, request: IRequest) -> list[dict[str, Any]]:
    hosts = await ctx.store.transact(lambda txn: txn.list_hosts())
    return [host_object(ctx, host) for host in hosts]


@routes.route("POST", "/api/v1/hosts", summary="Create a proxy host", body=HOST_SCHEMA,
              responses={201: ("The new host", HOST_OBJECT), 400: "Invalid field",
                         409: "A name belongs to another host", 422: "Invalid combination"})
async def create_host(ctx: AdminContext, request: IRequest, body: dict[str, Any]) -> Any:
    host = await _save(ctx, host_request(body), None)
    return JsonResponse(host_object(ctx, host), status=201)


@routes.route("GET", "/api/v1/hosts/<int:host_id>", summary="Show a proxy host",
              responses={200: ("The host", HOST_OBJECT), 404: "Unknown host"})
async def get_host(ctx: AdminContext, request: IRequest, host_id: int) -> dict[str, Any]:
    host = await ctx.store.transact(lambda txn: txn.get_host(host_id))
    return host_object(ctx, host)


@routes.route("PUT", "/api/v1/hosts/<int:host_id>", body=HOST_SCHEMA,
              summary="Replace a proxy host (omitted fields take their defaults)",
              responses={200: ("The host", HOST_OBJECT), 404: "Unknown host",
                         409: "A name belongs to another host", 422: "Invalid combination"})
async def replace_host(ctx: AdminContext, request: IRequest, host_id: int,
                       body: dict[str, Any]) -> dict[str, Any]:
    await ctx.store.transact(lambda txn: txn.get_host(host_id))
    host = await _save(ctx, host_request(body), host_id)
    return host_object(ctx, host)


@routes.route("PATCH", "/api/v1/hosts/<int:host_id>", body=HOST_SCHEMA,
              summary="Change some settings of a proxy host",
              responses={200: ("The host", HOST_OBJECT), 404: "Unknown host",
                         409: "A name belongs to another host", 422: "Invalid combination"})
async def update_host(ctx: AdminContext, request: IRequest, host_id: int,
                      body: dict[str, Any]) -> dict[str, Any]:
    current = await ctx.store.transact(lambda txn: txn.get_host(host_id))
    host = await _save(ctx, host_request(body, current.fields()), host_id)
    return host_object(ctx, host)


@routes.route("DELETE", "/api/v1/hosts/<int:host_id>", summary="Delete a proxy host",
              description="Frees the host's names and its certificate binding; the "
              "certificate itself stays stored.",
              responses={204: "Deleted", 404: "Unknown host"})
async def delete_host(ctx: AdminContext, request: IRequest, host_id: int) -> None:
    await ctx.store.transact(lambda txn: txn.delete_host(host_id))
    await _published(ctx)

