"""``/api/v1/certificates``: upload, list, show, replace and delete stored certificates.

Thin: each handler maps the request onto :class:`aegis.certs.service.CertificateService`
and its errors onto the API's error shape. Validation (PEM, key match, chain, names,
validity) and key sealing live in :mod:`aegis.certs`; authentication, Host/Origin guards,
content type, body limits and JSON strictness in the admin framework around these handlers.

Responses are certificate objects (see :mod:`aegis.certs.view`): never key material.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from aegis.admin._errors import ApiError
from aegis.admin._json import PEM_CERTIFICATE, PEM_PRIVATE_KEY, Field, ObjectSchema
from aegis.admin._routing import AdminContext, JsonResponse, RouteTable
from aegis.certs.errors import CertificateError
from aegis.certs.pem import MAX_PEM_CHARS
from aegis.certs.service import CertificateInUse, CertificateService
from aegis.certs.validate import MAX_DOMAINS

routes = RouteTable(tag="certificates")

COLLECTION = "/api/v1/certificates"
ITEM = "/api/v1/certificates/<int:cert_id>"

PAIR = ObjectSchema(
    {
        "domains": Field(
            "array",
            items=Field("string", max_length=1024, min_length=1),
            max_length=MAX_DOMAINS,
            description="Names the certificate must cover (checked against its SANs)",
        ),
        "cert_pem": Field(
            "string",
            required=True,
            max_length=MAX_PEM_CHARS,
            pattern=PEM_CERTIFICATE,
            pattern_code="invalid_pem",
            description="PEM certificate, optionally followed by its intermediates",
        ),
        "key_pem": Field(
            "string",
            required=True,
            max_length=MAX_PEM_CHARS,
            pattern=PEM_PRIVATE_KEY,
            pattern_code="invalid_pem",
            description="PEM private key (RSA >= 2048, ECDSA P-256/384/521, Ed25519)",
        ),
        "key_passphrase": Field(
            "string", nullable=True, max_length=1024, description="For an encrypted key"
        ),
    }
)

_TIME = {"type": "string", "format": "date-time"}
CERTIFICATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "domains",
        "source",
        "issuer",
        "expires_at",
        "auto_renew",
        "created_at",
    ],
    "properties": {
        "id": {"type": "integer"},
        "domains": {"type": "array", "items": {"type": "string"}},
        "source": {"type": "string", "enum": ["custom", "cloudflare_origin", "letsencrypt"]},
        "issuer": {"type": "string"},
        "expires_at": _TIME,
        "auto_renew": {"type": "boolean"},
        "created_at": _TIME,
        "not_before": _TIME,
        "subject": {"type": "string"},
        "fingerprint_sha256": {"type": "string"},
        "key_type": {"type": "string"},
        "chain_complete": {"type": "boolean"},
        "days_remaining": {"type": "integer"},
        "status": {
            "type": "string",
            "enum": ["valid", "expiring", "expired", "not_yet_valid"],
        },
        "hosts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "domain": {"type": "string"}},
            },
        },
        "problem": {"type": ["object", "null"]},
        "chain_pem": {"type": "string"},
    },
}


def _service(ctx: AdminContext) -> CertificateService:
    service = ctx.certificates
    if not isinstance(service, CertificateService):
        raise ApiError(503, "unavailable", "certificate management is not configured")
    return service


def _refusal(error: CertificateError) -> ApiError:
    return ApiError(error.status, error.code, error.message, error.field)


@routes.route(
    "GET",
    COLLECTION,
    summary="List all stored certificates (domains, source, issuer, expiry)",
    responses={200: ("Certificate objects", {"type": "array", "items": CERTIFICATE_SCHEMA})},
)
async def list_certificates(ctx: AdminContext, request: IRequest) -> Any:
    """Every stored certificate, ordered by id, with the hosts that use each."""
    return await _service(ctx).list()


@routes.route(
    "POST",
    COLLECTION,
    summary="Upload a custom certificate (PEM cert + key)",
    body=PAIR,
    responses={
        201: ("The stored certificate", CERTIFICATE_SCHEMA),
        400: "Malformed PEM, key mismatch, missing passphrase, no SAN, expired ...",
    },
)
async def upload_certificate(
    ctx: AdminContext, request: IRequest, body: dict[str, Any]
) -> JsonResponse:
    """Validate the pair, encrypt the key (AES-256-GCM), store it and reload the proxy."""
    try:
        created = await _service(ctx).upload(
            body["cert_pem"], body["key_pem"], body.get("domains"), body.get("key_passphrase")
        )
    except CertificateError as error:
        raise _refusal(error) from None
    return JsonResponse(created, 201, {"Location": f"{COLLECTION}/{created['id']}"})


@routes.route(
    "GET",
    ITEM,
    summary="Show one certificate with its public chain",
    responses={
        200: ("The certificate object plus chain_pem", CERTIFICATE_SCHEMA),
        404: "Unknown id",
    },
)
async def get_certificate(ctx: AdminContext, request: IRequest, cert_id: int) -> Any:
    """The certificate object and ``chain_pem`` (public certificates only, leaf first)."""
    return await _service(ctx).get(cert_id)


@routes.route(
    "PUT",
    ITEM,
    summary="Replace a custom certificate in place (same names)",
    body=PAIR,
    responses={
        200: ("The replaced certificate", CERTIFICATE_SCHEMA),
        400: "Invalid pair, or names differ from the stored certificate",
        404: "Unknown id",
        409: "Not a custom certificate",
    },
)
async def replace_certificate(
    ctx: AdminContext, request: IRequest, cert_id: int, body: dict[str, Any]
) -> Any:
    """Renew a custom certificate by hand: hosts bound to it follow without being edited."""
    try:
        return await _service(ctx).replace(
            cert_id,
            body["cert_pem"],
            body["key_pem"],
            body.get("domains"),
            body.get("key_passphrase"),
        )
    except CertificateError as error:
        raise _refusal(error) from None


@routes.route(
    "DELETE",
    ITEM,
    summary="Delete a certificate (fails if assigned to a host)",
    responses={204: "Deleted", 404: "Unknown id", 409: "Hosts still use it (named)"},
)
async def delete_certificate(ctx: AdminContext, request: IRequest, cert_id: int) -> None:
    """Delete an unused certificate and reload the proxy."""
    try:
        await _service(ctx).delete(cert_id)
    except CertificateInUse as error:
        raise ApiError(409, "certificate_in_use", str(error)) from None
