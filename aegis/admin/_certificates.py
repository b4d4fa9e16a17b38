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

from aegis.admin._errors import ApiError, invalid
from aegis.admin._json import Field, ObjectSchema
from aegis.admin._routing import AdminContext, JsonResponse, RouteTable
from aegis.certs import sources
from aegis.certs.errors import CertificateError
from aegis.certs.pem import MAX_PEM_CHARS
from aegis.certs.service import CertificateInUse, CertificateService
from aegis.certs.validate import MAX_DOMAINS
from aegis.store.records import ISSUANCE_STATUSES
from aegis.tls.selection import STEP_AUTOCERT, STEP_DOMAIN_MATCH, STEP_HOST_BINDING

routes = RouteTable(tag="certificates")

COLLECTION = "/api/v1/certificates"
ITEM = "/api/v1/certificates/<int:cert_id>"

PAIR = ObjectSchema(
    {
        "domains": Field(
            "array",
            items=Field("string", max_length=1024),
            max_length=MAX_DOMAINS,
            description="Names the certificate must cover (checked against its SANs)",
        ),
        "cert_pem": Field(
            "string",
            required=True,
            max_length=MAX_PEM_CHARS,
            description="PEM certificate, optionally followed by its intermediates",
        ),
        "key_pem": Field(
            "string",
            required=True,
            max_length=MAX_PEM_CHARS,
            description="PEM private key (RSA >= 2048, ECDSA P-256/384/521, Ed25519)",
        ),
        "key_passphrase": Field(
            "string", nullable=True, max_length=1024, description="For an encrypted key"
        ),
    }
)

_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
HOST_USE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "domain", "names", "step"],
    "properties": {
        "id": {"type": "integer"},
        "domain": {"type": "string"},
        "names": {"type": "array", "items": {"type": "string"},
                  "description": "The host's names this certificate is served for"},
        "step": {"type": "string", "enum": [STEP_HOST_BINDING, STEP_DOMAIN_MATCH,
                                            STEP_AUTOCERT]},
    },
}
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
        "source": {"type": "string", "enum": list(sources.names())},
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
            "description": "Every host this certificate serves now, and by which step of "
            "the SNI selection order (bindings count even while not chosen)",
            "items": HOST_USE_SCHEMA,
        },
        "problem": {
            "type": ["object", "null"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "lifecycle": {
            "type": ["object", "null"],
            "description": "Where automatic renewal stands (null: Aegis does not manage it)",
            "required": ["key", "status", "renews_at", "next_attempt_at", "last_error"],
            "properties": {
                "key": {"type": "string"},
                "status": {"type": "string", "enum": list(ISSUANCE_STATUSES)},
                "renews_at": _TIME_OR_NULL,
                "next_attempt_at": _TIME_OR_NULL,
                "last_error": {"type": ["string", "null"]},
            },
        },
        "retired": {
            "type": "boolean",
            "description": "No host asks for this managed certificate any more: not renewed",
        },
        "chain_pem": {"type": "string"},
    },
}

IN_USE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "field", "hosts"],
        "properties": {
            "code": {"type": "string", "enum": ["certificate_in_use"]},
            "message": {"type": "string"},
            "field": {"type": ["string", "null"]},
            "hosts": {"type": "array", "items": {
                "type": "object", "required": ["id", "domain", "step"],
                "properties": {"id": {"type": "integer"}, "domain": {"type": "string"},
                               "step": HOST_USE_SCHEMA["properties"]["step"]},
            }},
        },
    }},
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
    """Every stored certificate, ordered by id, with the hosts each serves and how."""
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


def _flag(request: IRequest, name: str) -> bool:
    """A boolean query parameter: absent is false; only ``true`` and ``false``, once."""
    values: list[bytes] = (request.args or {}).get(name.encode("ascii"), [])
    if not values:
        return False
    if len(values) == 1 and values[0] in (b"true", b"false"):
        return values[0] == b"true"
    raise invalid(name, f"{name} must be given once, as true or false")


@routes.route(
    "DELETE",
    ITEM,
    summary="Delete a certificate (fails if assigned to a host)",
    description="Refused (409 certificate_in_use, naming each host and its selection step) "
    "while the certificate serves any host by any step of the SNI order. force=true "
    "deletes one served by domain match or as a host's automatic certificate, and starts "
    "a new order for those names at once; a host bound by ssl_cert_id must be changed "
    "first even then.",
    query={"force": {"description": "Delete even though hosts are served by it (not "
                                    "bound ones)", "schema": {"type": "boolean"}}},
    responses={204: "Deleted", 404: "Unknown id",
               409: ("Hosts are served by it (named, with their step)", IN_USE_SCHEMA)},
)
async def delete_certificate(ctx: AdminContext, request: IRequest, cert_id: int) -> None:
    """Delete a certificate no host is served by (or, forced, only unbound ones) and
    reload the proxy."""
    force = _flag(request, "force")
    try:
        await _service(ctx).delete(cert_id, force=force)
    except CertificateInUse as error:
        raise ApiError(409, "certificate_in_use", str(error),
                       details={"hosts": error.hosts}) from None
