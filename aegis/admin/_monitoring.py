"""Monitoring routes: health (no token), alert banner, test alert, and ``/metrics``.

* ``GET /api/v1/health`` — the one API route without a token (see
  :data:`aegis.admin._routing.PUBLIC_ROUTES`): counts and states only, ``200`` or ``503``
  for systemd, Docker and load balancers (:mod:`aegis.monitor.status`). ``?verbose=1``
  (or ``?verbose``) adds per-certificate detail and then needs the token.
* ``GET /api/v1/alerts/banner`` — what the UI shows on top: what is failing, since when,
  the next try.
* ``POST /api/v1/alerts/test`` — one test alert to every channel, with each channel's
  outcome (channels are named ``webhook 1``, ``mail``: never a URL or a password).
* ``GET /metrics`` — Prometheus text format, with the token like every admin route;
  ``AEGIS_METRICS_LISTEN`` serves the same without a token on a separate listener.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from aegis.admin._errors import ApiError
from aegis.admin._routing import AdminContext, BytesResponse, JsonResponse, RouteTable
from aegis.monitor.metrics import CONTENT_TYPE
from aegis.monitor.status import banner, health
from aegis.monitor.wiring import Monitoring

routes = RouteTable(tag="monitoring")

STORE_PROBE_TIMEOUT = 2.0
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "problems", "listeners", "store", "certificates"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "warning", "critical"]},
        "problems": {"type": "array", "items": {"type": "string"}},
        "listeners": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "store": {"type": "object"},
        "certificates": {"type": "object"},
        "last_renewal_error": {"type": ["string", "null"]},
        "detail": {"type": "object"},
    },
}


def _monitoring(ctx: AdminContext) -> Monitoring:
    if ctx.monitoring is None:
        raise ApiError(503, "unavailable", "monitoring is not configured")
    return ctx.monitoring


async def _store_answers(ctx: AdminContext) -> bool:
    probe: Deferred[Any] = ctx.store.transact(lambda txn: txn.get_setting("monitor_heartbeat"))
    probe.addTimeout(STORE_PROBE_TIMEOUT, ctx.clock)
    try:
        await probe
    except Exception:
        return False
    return True


def _verbose(request: IRequest) -> bool:
    """``?verbose``, ``?verbose=1`` (not ``=0``, ``=false``, ``=no``)."""
    query = request.uri.partition(b"?")[2].decode("latin-1")
    values = parse_qs(query, keep_blank_values=True).get("verbose")
    return values is not None and values[-1].lower() not in ("0", "false", "no")


@routes.route(
    "GET", "/api/v1/health", public=True,
    summary="Health for load balancers and supervisors (no token; ?verbose=1 needs one)",
    responses={200: ("Healthy (status ok, warning or critical)", HEALTH_SCHEMA),
               401: "verbose=1 without a valid token",
               503: ("A listener is down, the store fails, or a serving certificate "
                     "expired", HEALTH_SCHEMA)},
)
async def get_health(ctx: AdminContext, request: IRequest, authenticated: bool) -> Any:
    """Listeners, store, certificate counts by level, failing names, last error name."""
    verbose = _verbose(request)
    if verbose and not authenticated:
        raise ApiError(401, "unauthorized", "verbose health needs the bearer token",
                       headers={"WWW-Authenticate": 'Bearer realm="aegis-admin"'})
    monitoring = _monitoring(ctx)
    status, body = health(monitoring.monitor, await _store_answers(ctx), verbose)
    return JsonResponse(body, status=status)


@routes.route(
    "GET", "/api/v1/alerts/banner",
    summary="What is failing, since when, and the next try (the UI's banner)",
    responses={200: ("The banner", {"type": "object"})},
)
async def get_alert_banner(ctx: AdminContext, request: IRequest) -> Any:
    return banner(_monitoring(ctx).monitor)


@routes.route(
    "POST", "/api/v1/alerts/test",
    summary="Send a test alert to every channel (one attempt each)",
    responses={200: ("Each channel's outcome", {"type": "object"}),
               409: "No alert channel is configured"},
)
async def post_test_alert(ctx: AdminContext, request: IRequest) -> Any:
    monitoring = _monitoring(ctx)
    if not monitoring.monitor.dispatcher.channels:
        raise ApiError(409, "no_channels", "no alert channel is configured: set "
                       "AEGIS_ALERT_WEBHOOK_URLS or AEGIS_ALERT_SMTP_HOST")
    results = await monitoring.test_alert()
    shown = [{"channel": label, "delivered": error is None, "error": error}
             for label, error in results]
    return {"delivered": all(row["delivered"] for row in shown), "channels": shown}


@routes.route(
    "GET", "/metrics", summary="Prometheus metrics (text exposition format)",
    content_type=CONTENT_TYPE, responses={200: "The metrics"},
)
async def get_metrics(ctx: AdminContext, request: IRequest) -> BytesResponse:
    """Every series of docs/monitoring.md, folded at scrape time."""
    return BytesResponse(_monitoring(ctx).metrics(), CONTENT_TYPE)
