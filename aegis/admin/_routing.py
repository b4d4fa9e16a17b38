"""How a feature adds admin routes: one :class:`RouteTable` per module.

A route module (``aegis/admin/_certificates.py``, ``_hosts.py`` ...) creates a table and
decorates ``async`` handlers with it::

    routes = RouteTable(tag="certificates")

    @routes.route("DELETE", "/api/v1/certificates/<int:cert_id>",
                  summary="Delete a certificate", responses={204: "Deleted"})
    async def delete_certificate(ctx: AdminContext, request: IRequest, cert_id: int) -> None:
        await ctx.store.transact(lambda txn: txn.delete_certificate(cert_id))

and :mod:`aegis.admin._registry` lists the table (one line). The table feeds both Klein's
route map and the OpenAPI document, so neither can list a route the other lacks.

A handler receives the :class:`AdminContext`, the request, the path parameters and, if the
route declares ``body=ObjectSchema(...)``, ``body``: the already validated JSON object. It
returns a JSON-serialisable value (200), a :class:`JsonResponse` / :class:`BytesResponse`
for another status or content type, or None (204). It raises
:class:`aegis.admin._errors.ApiError` (or a store error) to fail; auth, Host/Origin
guards, content type, body limits and error rendering happen around it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from aegis.admin._json import ObjectSchema
from aegis.crypto.keywrap import KeyWrapper
from aegis.interfaces import IStore
from aegis.localca import LocalAuthority

if TYPE_CHECKING:
    from aegis.certs.lifecycle import LifecycleEngine
    from aegis.certs.service import CertificateService
    from aegis.events import EventPublisher
    from aegis.hosts.state import ProxyState
    from aegis.monitor.wiring import Monitoring
    from aegis.sources.cloudflare.service import CloudflareServices
    from aegis.tls.selection import SelectionState

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Largest row id SQLite can hold; a path id beyond it names nothing that could exist.
MAX_ROW_ID = 2**63 - 1
#: Paths outside /api/v1 that a route table may declare (Prometheus expects /metrics).
OUTSIDE_API = ("/metrics",)
#: The only routes answered without a token, named one by one on purpose: the CA
#: certificate (public by nature) and the health check (counts, no names, no secrets).
PUBLIC_ROUTES = frozenset({
    ("GET", "/api/v1/settings/admin-trust-bundle"),
    ("GET", "/api/v1/health"),
})


@dataclass(frozen=True)
class AdminContext:
    """What route handlers may use. A feature needing another collaborator adds one
    optional field here and passes it in ``aegis.tap.build_tree``."""

    store: IStore
    wrapper: KeyWrapper
    local_ca: LocalAuthority
    clock: IReactorTime  # ``seconds()`` / ``callLater`` for handlers that need time
    certificates: CertificateService | None = None
    cloudflare: CloudflareServices | None = None
    selection: SelectionState | None = None
    proxy: ProxyState | None = None
    lifecycle: LifecycleEngine | None = None
    events: EventPublisher | None = None
    monitoring: Monitoring | None = None


@dataclass(frozen=True)
class JsonResponse:
    body: Any
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BytesResponse:
    body: bytes
    content_type: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    """One method on one path, with what the OpenAPI document says about it.

    ``responses`` maps a status to a description, or to ``(description, JSON schema)``;
    ``content_type`` is the media type of the success body. ``public`` routes skip the
    token (only for public material, such as the CA certificate, and the health check);
    their handler gets ``authenticated``: whether a valid token came anyway (a wrong one
    is still refused).
    """

    method: str
    path: str  # Klein / werkzeug syntax: /api/v1/certificates/<int:cert_id>
    handler: Handler
    summary: str
    tag: str
    description: str = ""
    body: ObjectSchema | None = None
    responses: Mapping[int, str | tuple[str, Mapping[str, Any]]] = field(default_factory=dict)
    content_type: str = "application/json"
    public: bool = False
    # OpenAPI parameter objects beyond the path ones (query strings, headers a handler reads)
    parameters: tuple[Mapping[str, Any], ...] = ()

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def openapi_path(self) -> str:
        return klein_to_openapi_path(self.path)


_PARAM = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def klein_to_openapi_path(path: str) -> str:
    """``/a/<int:cert_id>`` -> ``/a/{cert_id}``."""
    return _PARAM.sub(lambda match: "{" + match.group(2) + "}", path)


def path_parameters(path: str) -> list[tuple[str, str]]:
    """``(name, OpenAPI type)`` of each path parameter, in order."""
    kinds = {"int": "integer", "float": "number"}
    return [(m.group(2), kinds.get(m.group(1) or "", "string")) for m in _PARAM.finditer(path)]


class RouteTable:
    """The routes of one feature module, in declaration order."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        description: str = "",
        body: ObjectSchema | None = None,
        responses: Mapping[int, str | tuple[str, Mapping[str, Any]]] | None = None,
        content_type: str = "application/json",
        public: bool = False,
        parameters: tuple[Mapping[str, Any], ...] = (),
    ) -> Callable[[Handler], Handler]:
        if method not in METHODS:
            raise ValueError(f"unsupported method {method}")
        if public and (method, path) not in PUBLIC_ROUTES:
            raise ValueError(f"{method} {path} is not in PUBLIC_ROUTES: it needs the token")
        if not path.startswith("/api/v1/") and path not in OUTSIDE_API:
            raise ValueError("admin API routes live under /api/v1/")

        def register(handler: Handler) -> Handler:
            self.operations.append(Operation(
                method=method, path=path, handler=handler, summary=summary, tag=self.tag,
                description=description or (handler.__doc__ or "").strip(),
                body=body, responses=dict(responses or {200: "OK"}),
                content_type=content_type, public=public, parameters=parameters,
            ))
            return handler

        return register
