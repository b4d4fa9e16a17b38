"""The OpenAPI 3.1 document of the admin API, generated from the route tables.

Nothing here is written by hand per route: paths, methods, parameters, request bodies
(from each route's :class:`aegis.admin._json.ObjectSchema`), security and the shared error
responses all come from :class:`aegis.admin._routing.Operation`, and a test compares the
result with Klein's route map.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aegis import __version__
from aegis.admin._errors import error_schema
from aegis.admin._routing import Operation, path_parameters

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_COMMON_ERRORS = {
    400: "Invalid request (the error's field names the culprit)",
    403: "Foreign Host or cross-site Origin",
    413: "Body larger than 1 MiB",
    415: "Write without Content-Type application/json",
    500: "Unexpected error (details only in the server log)",
    503: "Database busy; retry after Retry-After seconds",
}


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, spec in sorted(op.responses.items()):
        description, schema = spec if isinstance(spec, tuple) else (spec, None)
        entry: dict[str, Any] = {"description": description}
        if status != 204:
            entry["content"] = {op.content_type: {"schema": dict(schema) if schema else {}}}
        responses[str(status)] = entry
    errors = dict(_COMMON_ERRORS)
    if not op.public:
        errors[401] = "Missing or wrong bearer token"
    for status, description in sorted(errors.items()):
        responses.setdefault(str(status), {
            "description": description,
            "content": {"application/json": {"schema": _ERROR_REF}},
        })
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "security": [] if op.public else [{"bearer": []}],
    }
    if op.description:
        result["description"] = op.description
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": kind}}
        for name, kind in path_parameters(op.path)
    ]
    params += [{"name": name, "in": "query", "required": False, **spec}
               for name, spec in op.query.items()]
    if params:
        result["parameters"] = params
    if op.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body.json_schema()}},
        }
    return result


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.openapi_path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Aegis admin API",
            "version": __version__,
            "description": "Certificates, proxy hosts and settings of one Aegis node. "
                           "Send `Authorization: Bearer <token>` on every route that "
                           "does not say otherwise.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": error_schema()},
        },
        "security": [{"bearer": []}],
    }
