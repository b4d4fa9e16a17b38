"""The admin API application: Klein routes from the route tables, wrapped in the guards.

:class:`AdminAPI` turns every :class:`aegis.admin._routing.Operation` of
:data:`aegis.admin._registry.ROUTE_TABLES` (plus its own OpenAPI route) into a Klein route
whose endpoint runs, in order: Host/Origin guard (403), bearer token (401, unless the
route is public), body size (413), content type (415), JSON body parsing (400), the
handler, and rendering. Any failure becomes the one JSON error shape; an unexpected
exception is logged by type and stack frames only (its message might quote data) and
answered with a generic 500.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from inspect import isawaitable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from aegis.admin import _openapi, _ui
from aegis.admin._errors import INTERNAL_ERROR, ApiError, from_store_error
from aegis.admin._guards import (
    AdminAddress,
    TokenVerifier,
    check_content_type,
    check_host_and_origin,
)
from aegis.admin._json import parse_json_body
from aegis.admin._limits import MAX_BODY_BYTES
from aegis.admin._registry import ROUTE_TABLES
from aegis.admin._routing import (
    MAX_ROW_ID,
    AdminContext,
    BytesResponse,
    JsonResponse,
    Operation,
    RouteTable,
)
from aegis.store.errors import StoreError

log = Logger()

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

class AdminAPI:
    """The admin REST API as a twisted.web resource (:meth:`resource`)."""

    app = Klein()
    operations: tuple[Operation, ...] = ()  # set by _install, in OpenAPI order

    def __init__(
        self,
        context: AdminContext,
        verifier: TokenVerifier,
        address: AdminAddress,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.context = context
        self._verifier = verifier
        self._address = address
        self._max_body = max_body

    def resource(self) -> IResource:
        return _GuardedResource(self, self.app.resource())

    def dispatch(self, op: Operation, request: IRequest, params: dict[str, Any]) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._run(op, request, params))

    async def _run(self, op: Operation, request: IRequest, params: dict[str, Any]) -> bytes:
        try:
            authenticated = self._admit(request, public=op.public)
            _check_path_ids(params)
            if op.public:
                params["authenticated"] = authenticated
            body = self._read_body(request)
            if op.body is not None:
                params["body"] = parse_json_body(body, op.body)
            elif body.strip():
                raise ApiError(400, "unexpected_body", "this route takes no request body")
            result = op.handler(self.context, request, **params)
            if isawaitable(result):
                result = await result
            return _render(request, result)
        except ApiError as error:
            return _render_error(request, error)
        except StoreError as error:
            return _render_error(request, from_store_error(error))
        except Exception as error:
            _log_unexpected(request, op.path, error)
            return _render_error(request, INTERNAL_ERROR)

    def _admit(self, request: IRequest, public: bool) -> bool:
        """Guards; whether a valid token came (a public route answers without one, and
        its handler decides what a missing or wrong token withholds)."""
        check_host_and_origin(request, self._address)
        if not public:
            self._verifier.check(request)
            return True
        if request.getHeader(b"authorization") is None:
            return False
        try:
            self._verifier.check(request)
        except ApiError:
            return False
        return True

    def _read_body(self, request: IRequest) -> bytes:
        declared = request.getHeader(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise _too_large(self._max_body)
        content = request.content
        body = content.read(self._max_body + 1) if content is not None else b""
        if len(body) > self._max_body:
            raise _too_large(self._max_body)
        check_content_type(request, len(body))
        return body

    def _refuse_unrouted(self, request: IRequest, error: ApiError) -> bytes:
        """Unknown paths and methods: still guarded, so they reveal nothing without a token."""
        try:
            self._admit(request, public=False)
        except ApiError as refusal:
            return _render_error(request, refusal)
        return _render_error(request, error)

    def _not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self._refuse_unrouted(
            request, ApiError(404, "not_found", "no such route")
        )

    def _method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = sorted(getattr(failure.value, "valid_methods", None) or [])
        return self._refuse_unrouted(request, ApiError(
            405, "method_not_allowed", "this route does not accept that method",
            headers={"Allow": ", ".join(allowed)},
        ))

    def _other_http_error(self, request: IRequest, failure: Failure) -> bytes:
        code = getattr(failure.value, "code", None) or 400
        return self._refuse_unrouted(request, ApiError(code, "bad_request", "request refused"))


_TOKEN_CHARS = frozenset(  # RFC 9110 5.6.2 tchar: what a method may be made of
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


class _GuardedResource(Resource):
    """The Host/Origin guard and a method check *before* Klein routes the request.

    Klein binds its URL map to the ``Host`` header and decodes the method as UTF-8 before
    any route runs: a Host such as ``.127.0.0.1`` (werkzeug's BadHost) or a method with
    non-UTF-8 bytes would be an exception there, i.e. a 500 from twisted.web, and a path
    that is not UTF-8 a logged traceback. Checked here first, none reaches Klein; the guards
    in :meth:`AdminAPI._admit` still run per route.
    """

    isLeaf = True

    def __init__(self, api: AdminAPI, routed: IResource) -> None:
        super().__init__()
        self._api = api
        self._routed = routed

    def render(self, request: IRequest) -> Any:
        method = request.method or b""
        if not method or not set(method) <= _TOKEN_CHARS:
            return _render_error(request, ApiError(400, "bad_request", "invalid method"))
        try:
            b"/".join([*(request.prepath or []), *(request.postpath or [])]).decode("utf-8")
        except UnicodeDecodeError:
            return _render_error(request, ApiError(400, "bad_request", "the path is not UTF-8"))
        try:
            check_host_and_origin(request, self._api._address)
        except ApiError as refusal:
            return _render_error(request, refusal)
        return self._routed.render(request)


def _meta_routes(operations: list[Operation]) -> RouteTable:
    meta = RouteTable(tag="meta")

    @meta.route("GET", "/api/v1/openapi.json", summary="This API's OpenAPI 3 document",
                responses={200: ("The OpenAPI document", {"type": "object"})})
    async def get_openapi(ctx: AdminContext, request: IRequest) -> Any:
        """Every route of the admin API, generated from the same tables as the routes."""
        return _openapi.document(operations)

    return meta


def _install(cls: type[AdminAPI], tables: Sequence[RouteTable]) -> None:
    """Give ``cls`` its Klein routes: the OpenAPI route, then every table's operations."""
    operations: list[Operation] = []
    operations.extend(_meta_routes(operations).operations)
    for table in tables:
        operations.extend(table.operations)
    cls.operations = tuple(operations)
    app = cls.app
    app.handle_errors(NotFound)(cls._not_found)
    app.handle_errors(MethodNotAllowed)(cls._method_not_allowed)
    app.handle_errors(HTTPException)(cls._other_http_error)
    for op in operations:
        _register(app, op)
    _ui.register(app)


def _register(app: Klein, op: Operation) -> None:
    def endpoint(self: AdminAPI, request: IRequest, **params: Any) -> Deferred[Any]:
        return self.dispatch(op, request, params)

    endpoint.__name__ = op.operation_id
    app.route(op.path, methods=[op.method], endpoint=op.operation_id)(endpoint)


def api_class(tables: Sequence[RouteTable], name: str = "CustomAdminAPI") -> type[AdminAPI]:
    """An :class:`AdminAPI` serving other route tables (tests of the request pipeline)."""
    cls = type(name, (AdminAPI,), {"app": Klein()})
    _install(cls, tables)
    return cls


_install(AdminAPI, ROUTE_TABLES)


def _check_path_ids(params: dict[str, Any]) -> None:
    """``<int:...>`` path parameters accept any digits; ids past :data:`MAX_ROW_ID` are a
    404 here rather than an OverflowError in the store."""
    for name, value in params.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_ROW_ID:
            raise ApiError(404, "not_found", f"nothing has this {name}", name)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")


def _set_headers(request: IRequest, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name.encode("ascii"), value.encode("latin-1"))


def _render(request: IRequest, result: Any) -> bytes:
    _set_headers(request, SECURITY_HEADERS)
    if result is None:
        request.setResponseCode(204)
        return b""
    if isinstance(result, BytesResponse):
        request.setResponseCode(result.status)
        _set_headers(request, {"Content-Type": result.content_type, **result.headers})
        return result.body
    status, headers = 200, {}
    if isinstance(result, JsonResponse):
        status, headers, result = result.status, dict(result.headers), result.body
    request.setResponseCode(status)
    _set_headers(request, {"Content-Type": "application/json", **headers})
    return json.dumps(result, ensure_ascii=False).encode("utf-8")


def _render_error(request: IRequest, error: ApiError) -> bytes:
    request.setResponseCode(error.status)
    _set_headers(request, {**SECURITY_HEADERS, "Content-Type": "application/json",
                           **error.headers})
    return error.body()


def _log_unexpected(request: IRequest, route: str, error: Exception) -> None:
    log.error(
        "admin API {method} {route} failed with {error_type}\n{frames}",
        method=request.method.decode("ascii", "replace"),
        route=route,
        error_type=type(error).__qualname__,
        # File, line and function only: source lines and the message may quote data.
        frames="\n".join(
            f"  {frame.filename}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(error.__traceback__)
        ),
    )
