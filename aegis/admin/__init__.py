"""The admin REST API (Klein), its guards, and its TLS listener.

Public names only; the implementation lives in the private modules. To add routes, see
``docs/admin-api.md``: one module with a :class:`RouteTable`, one line in
``aegis/admin/_registry.py``.
"""

from aegis.admin._app import AdminAPI, api_class
from aegis.admin._auth import TOKEN_DIGEST_SETTING, TOKEN_FILE, resolve_admin_token
from aegis.admin._errors import ApiError, from_store_error, invalid
from aegis.admin._guards import AdminAddress, TokenVerifier, listen_address
from aegis.admin._json import Field, ObjectSchema, parse_json_body
from aegis.admin._limits import MAX_BODY_BYTES, BodyLimitedRequest
from aegis.admin._routing import (
    AdminContext,
    BytesResponse,
    JsonResponse,
    Operation,
    RouteTable,
)
from aegis.admin._service import AdminCertificateCreator, admin_site, build_admin_service
from aegis.admin._trust import trust_bundle

__all__ = [
    "MAX_BODY_BYTES",
    "TOKEN_DIGEST_SETTING",
    "TOKEN_FILE",
    "AdminAPI",
    "AdminAddress",
    "AdminCertificateCreator",
    "AdminContext",
    "ApiError",
    "BodyLimitedRequest",
    "BytesResponse",
    "Field",
    "JsonResponse",
    "ObjectSchema",
    "Operation",
    "RouteTable",
    "TokenVerifier",
    "admin_site",
    "api_class",
    "build_admin_service",
    "from_store_error",
    "invalid",
    "listen_address",
    "parse_json_body",
    "resolve_admin_token",
    "trust_bundle",
]
