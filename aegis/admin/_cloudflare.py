"""Admin routes for Cloudflare: Origin CA certificates and Edge certificate packs.

``POST /api/v1/certificates/cloudflare-origin`` and ``POST .../cloudflare-edge`` follow the
spec's bodies; ``GET .../cloudflare-edge/{id}?zone_id=...`` reads a pack's status with the
token in ``X-Cloudflare-Token`` (the ``Authorization`` header carries the admin token).
``PATCH /api/v1/certificates/{id}`` switches automatic renewal of an Origin CA certificate
on (with the credential to keep, sealed) or off (the sealed credential deleted).

Errors: invalid input is a 400 naming the field, before any key is generated or Cloudflare
is called; Cloudflare refusing the credential or the request is a 400 carrying Cloudflare's
own codes and messages; Cloudflare unreachable, rate limiting past our retries, or answering
garbage is a 502 (with ``Retry-After`` when Cloudflare gave one); a timeout is a 504; a
certificate for other names or another key is a 502 and nothing is stored. No answer ever
echoes a credential.

The services come from ``AdminContext.cloudflare`` (a :class:`CloudflareServices`); a node
built without them answers 503.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from aegis.admin._certificates import CERTIFICATE_SCHEMA
from aegis.admin._errors import ApiError, invalid
from aegis.admin._json import Field, ObjectSchema
from aegis.admin._routing import AdminContext, JsonResponse, RouteTable
from aegis.sources.cloudflare.errors import CloudflareError, Credentials
from aegis.sources.cloudflare.orders import (
    EDGE_AUTHORITIES,
    EDGE_VALIDATION_METHODS,
    ORIGIN_REQUEST_TYPES,
    FieldError,
    parse_edge_order,
    parse_identifier,
    parse_origin_order,
    parse_renewal_change,
)
from aegis.sources.cloudflare.origin import CertificateMismatch
from aegis.sources.cloudflare.renewal import NotRenewable, set_renewal
from aegis.sources.cloudflare.service import CloudflareServices

routes = RouteTable(tag="certificates")

_SECRET = Field("string", max_length=1024, description=(
    "Never logged or returned; stored only sealed by the master key, and only with "
    "auto_renew true."))
_HOSTNAMES = Field("array", required=True, max_length=100,
                   items=Field("string", max_length=253),
                   description="Hostnames; a wildcard only as a single leading '*.'.")

ORIGIN_BODY = ObjectSchema({
    "auth_method": Field("string", enum=("api_token", "origin_ca_key"),
                         description="api_token (default) or origin_ca_key (deprecated)."),
    "api_token": _SECRET,
    "origin_ca_key": _SECRET,
    "hostnames": _HOSTNAMES,
    "request_type": Field("string", enum=tuple(ORIGIN_REQUEST_TYPES),
                          description="origin-rsa (RSA 2048, default) or origin-ecc (P-256)."),
    "requested_validity": Field("integer", description="Days: 7, 30, 90, 365, 730, 1095 or "
                                                       "5475 (default)."),
    "zone_id": Field("string", max_length=64, description="Cloudflare zone id, for audit."),
    "auto_renew": Field("boolean", description=(
        "Renew automatically (default false: renewal is manual). When true the credential is "
        "kept sealed by the master key with the certificate, and Aegis requests a new "
        "certificate for the same names once a third of its lifetime is left.")),
})

RENEWAL_BODY = ObjectSchema({
    "auto_renew": Field("boolean", required=True, description=(
        "true: renew automatically with the credential given here; false: stop, and delete "
        "the stored credential.")),
    "auth_method": Field("string", enum=("api_token", "origin_ca_key"),
                         description="With auto_renew true: api_token (default) or "
                                     "origin_ca_key."),
    "api_token": _SECRET,
    "origin_ca_key": _SECRET,
})

EDGE_BODY = ObjectSchema({
    "api_token": Field("string", required=True, max_length=1024,
                       description="Never stored, logged or returned."),
    "zone_id": Field("string", required=True, max_length=64),
    "hostnames": Field("array", required=True, max_length=50,
                       items=Field("string", max_length=253)),
    "certificate_authority": Field("string", enum=EDGE_AUTHORITIES),
    "validation_method": Field("string", enum=EDGE_VALIDATION_METHODS),
    "validity_days": Field("integer", description="14, 30, 90 (default) or 365."),
    "cloudflare_branding": Field("boolean"),
})

ORIGIN_RESPONSE = {
    "type": "object",
    "required": ["status", "id", "cloudflare_id", "expires_on", "requested_zone", "auto_renew"],
    "properties": {
        "status": {"type": "string", "enum": ["created"]},
        "id": {"type": "integer"},
        "cloudflare_id": {"type": "string"},
        "expires_on": {"type": "string", "format": "date-time"},
        "requested_zone": {"type": "string"},
        "auto_renew": {"type": "boolean"},
    },
}
PACK_RESPONSE = {
    "type": "object",
    "required": ["id", "cloudflare_id", "status", "zone_id"],
    "properties": {
        "id": {"type": "string"}, "cloudflare_id": {"type": "string"},
        "status": {"type": "string"}, "zone_id": {"type": "string"},
        "hosts": {"type": "array", "items": {"type": "string"}},
        "validation_records": {"type": "array", "items": {"type": "object"}},
        "certificates": {"type": "array", "items": {"type": "object"}},
    },
}
_UPSTREAM_ERRORS: dict[int, str | tuple[str, Any]] = {
    502: "Cloudflare unavailable, rate limiting, or a certificate that does not match",
    504: "Cloudflare did not answer in time",
}


def _services(ctx: AdminContext) -> CloudflareServices:
    services = ctx.cloudflare
    if not isinstance(services, CloudflareServices):
        raise ApiError(503, "cloudflare_unavailable", "Cloudflare support is not configured")
    return services


def _api_error(error: Exception) -> ApiError:
    """Map source errors to the admin error shape (messages are ours or Cloudflare's, both
    already free of credentials)."""
    if isinstance(error, FieldError):
        return invalid(error.field, error.message)
    if isinstance(error, CertificateMismatch):
        return ApiError(502, "cloudflare_certificate_mismatch", str(error))
    assert isinstance(error, CloudflareError)
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(int(error.retry_after + 0.999))
    return ApiError(error.admin_status, "cloudflare_" + error.kind, str(error), None, headers)


@routes.route(
    "POST", "/api/v1/certificates/cloudflare-origin",
    summary="Request a Cloudflare Origin CA certificate",
    body=ORIGIN_BODY,
    responses={201: ("Created and stored (source cloudflare_origin)", ORIGIN_RESPONSE),
               **_UPSTREAM_ERRORS},
)
async def create_cloudflare_origin(
    ctx: AdminContext, request: IRequest, body: dict[str, Any]
) -> JsonResponse:
    """The key and CSR are made here; the key never leaves Aegis unencrypted. The returned
    certificate is stored only if it is for our key and exactly the requested names."""
    try:
        order = parse_origin_order(body)
        created = await _services(ctx).origin.request(order)
    except (FieldError, CloudflareError, CertificateMismatch) as error:
        raise _api_error(error) from None
    return JsonResponse(created, status=201)


@routes.route(
    "POST", "/api/v1/certificates/cloudflare-edge",
    summary="Order a Cloudflare Edge certificate (advanced certificate pack)",
    body=EDGE_BODY,
    responses={201: ("Ordered; Cloudflare's pack id and status", PACK_RESPONSE),
               **_UPSTREAM_ERRORS},
)
async def create_cloudflare_edge(
    ctx: AdminContext, request: IRequest, body: dict[str, Any]
) -> JsonResponse:
    """Cloudflare issues and serves the certificate at its edge; Aegis keeps an audit record
    (no token) and returns the validation records to publish."""
    try:
        order = parse_edge_order(body)
        pack = await _services(ctx).edge.order(order)
    except (FieldError, CloudflareError) as error:
        raise _api_error(error) from None
    return JsonResponse(pack, status=201)


@routes.route(
    "GET", "/api/v1/certificates/cloudflare-edge/<pack_id>",
    summary="Status of a Cloudflare Edge certificate pack",
    description="Query parameter zone_id; the Cloudflare API token in X-Cloudflare-Token.",
    responses={200: ("The pack's current status", PACK_RESPONSE), **_UPSTREAM_ERRORS},
)
async def get_cloudflare_edge(
    ctx: AdminContext, request: IRequest, pack_id: str
) -> dict[str, Any]:
    """Validation can take minutes to days: ask again with the token until ``active``."""
    try:
        pack_id = parse_identifier(pack_id, "id")
        zones = (request.args or {}).get(b"zone_id") or [b""]
        if len(zones) != 1:
            raise FieldError("zone_id", "give zone_id once")
        zone_id = parse_identifier(zones[0].decode("utf-8", "replace"), "zone_id")
        raw_token = request.getHeader(b"x-cloudflare-token")
        if not raw_token:
            raise FieldError("X-Cloudflare-Token", "the Cloudflare API token is required")
        try:
            credentials = Credentials("api_token", raw_token.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise FieldError("X-Cloudflare-Token", "not a valid token") from None
        return await _services(ctx).edge.status(credentials, zone_id, pack_id)
    except (FieldError, CloudflareError) as error:
        raise _api_error(error) from None


@routes.route(
    "PATCH", "/api/v1/certificates/<int:cert_id>",
    summary="Switch automatic renewal of a Cloudflare Origin CA certificate on or off",
    body=RENEWAL_BODY,
    responses={200: ("The certificate object", CERTIFICATE_SCHEMA), 404: "Unknown id",
               409: "Not a Cloudflare Origin CA certificate"},
)
async def set_certificate_renewal(
    ctx: AdminContext, request: IRequest, cert_id: int, body: dict[str, Any]
) -> Any:
    """On: the credential is checked for form only and kept sealed with the certificate; the
    next renewal uses it. Off: the sealed credential is deleted. The lifecycle engine takes
    it up (or retires it) at once; the certificate keeps serving either way."""
    try:
        credentials = parse_renewal_change(body)
    except FieldError as error:
        raise _api_error(error) from None
    wrapper = ctx.wrapper
    try:
        record = await ctx.store.transact(
            lambda txn: set_renewal(txn, wrapper, cert_id, credentials))
    except NotRenewable as error:
        raise ApiError(409, "auto_renew_not_supported", str(error)) from None
    if ctx.lifecycle is not None:
        await ctx.lifecycle.refresh()
    if ctx.certificates is not None:
        return await ctx.certificates.get(record.id)
    return {"id": record.id, "auto_renew": record.auto_renew}
