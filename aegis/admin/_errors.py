"""One error shape for every failure of the admin API.

Every non-2xx answer has the body ``{"error": {"code": ..., "message": ..., "field": ...}}``:
``code`` is a stable machine-readable word, ``message`` is for people, ``field`` names the
request field at fault or is null. Messages are written by us, never copied from an
exception of unknown origin, so no secret or traceback can leak through them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aegis.store.errors import Conflict, NotFound, StoreBusy, StoreError, StoreFull


@dataclass(eq=False)
class ApiError(Exception):
    """Raise from a route handler to answer with the error shape.

    Not frozen: the interpreter and Twisted's Failure set ``__traceback__`` on exceptions.

    ``headers`` are extra response headers (``WWW-Authenticate``, ``Retry-After``, ``Allow``).
    ``details`` are extra members of the error object for programs, beside ``code``,
    ``message`` and ``field`` (e.g. the hosts a ``certificate_in_use`` names); written by
    us like the message.
    """

    status: int
    code: str
    message: str
    field: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.field, self.details)


def error_body(code: str, message: str, field_name: str | None = None,
               details: Mapping[str, Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "field": field_name}
    error.update({k: v for k, v in (details or {}).items() if k not in error})
    return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")


def invalid(field_name: str | None, message: str, code: str = "invalid_field",
            status: int = 400) -> ApiError:
    """A validation error naming the request field at fault (400 unless told otherwise).

    Route modules use this for every rejected input, e.g.
    ``raise invalid("key_pem", "the key does not match the certificate", "key_mismatch")``.
    """
    return ApiError(status, code, message, field_name)


def from_store_error(error: StoreError) -> ApiError:
    """Map :mod:`aegis.store.errors` to HTTP: NotFound 404, Conflict 409, StoreBusy 503,
    StoreFull 507 (Insufficient Storage)."""
    if isinstance(error, NotFound):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, Conflict):
        return ApiError(409, "conflict", str(error), error.field)
    if isinstance(error, StoreFull):
        return ApiError(507, "storage_full",
                        "the disk holding the database is full; nothing was changed")
    if isinstance(error, StoreBusy):
        return ApiError(
            503, "store_busy", "the database is busy; retry shortly",
            headers={"Retry-After": str(error.retry_after_seconds)},
        )
    return ApiError(500, "store_error", "the database reported an error")


INTERNAL_ERROR = ApiError(500, "internal_error", "an unexpected error occurred; see the log")


def error_schema() -> dict[str, Any]:
    """JSON Schema of the error shape, for the OpenAPI document."""
    return {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }},
    }
