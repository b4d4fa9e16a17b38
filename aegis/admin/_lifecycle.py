"""``/api/v1/issuance``: where every automatically managed certificate stands, and the
operator's "retry now".

Read from the lifecycle engine's memory (never the network): state, source, issuer, when the
current attempt started, consecutive failures, the last error, when the next attempt may
start and when the certificate renews. ``POST /api/v1/hosts/{id}/issuance/retry`` clears
the backoff of every automatic name of a host and starts at once — after fixing DNS or a
firewall nobody should wait out a 6-hour backoff (the CA's failed-validation budget still
holds; ``next_attempt_at`` then says when).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from twisted.web.iweb import IRequest

from aegis.admin._errors import ApiError
from aegis.admin._routing import AdminContext, RouteTable
from aegis.certs import sources
from aegis.certs.lifecycle import LifecycleEngine
from aegis.store.records import ISSUANCE_STATUSES, IssuanceState
from aegis.timefmt import to_text

routes = RouteTable(tag="issuance")

_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
ISSUANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "names", "source", "status", "failures"],
    "properties": {
        "name": {"type": "string"},
        "names": {"type": "array", "items": {"type": "string"}},
        "source": {"type": "string"},
        "status": {"type": "string", "enum": [*ISSUANCE_STATUSES, "covered"],
                   "description": "covered: another certificate serves the name by domain "
                   "match, so Aegis orders none for it"},
        "issuer": {"type": ["string", "null"]},
        "issued_by": {"type": ["string", "null"]},
        "certificate_id": {"type": ["integer", "null"]},
        "failures": {"type": "integer"},
        "attempt_started_at": _TIME_OR_NULL,
        "last_attempt_at": _TIME_OR_NULL,
        "last_error": {"type": ["string", "null"]},
        "next_attempt_at": _TIME_OR_NULL,
        "renews_at": _TIME_OR_NULL,
        "retired_at": _TIME_OR_NULL,
        "in_flight": {"type": "boolean"},
    },
}


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else to_text(moment)


def issuance_object(engine: LifecycleEngine, state: IssuanceState) -> dict[str, Any]:
    """The API shape of one managed set (public facts only: never the pending key).

    ``issuer`` is who Aegis orders from for this set now (CA and account), also before
    any certificate exists; ``issued_by`` who made the current certificate (they differ
    after a change of CA until the renewal that the change triggers)."""
    running = engine.in_flight(state.name)
    current = engine.issuer_of(state.source)
    return {
        "name": state.name, "names": list(state.ordered_names), "source": state.source,
        "status": state.status,
        "issuer": state.issuer if current is None else current.identity,
        "issued_by": state.issuer if state.certificate_id is not None else None,
        "certificate_id": state.certificate_id, "failures": state.failures,
        "attempt_started_at": _stamp(state.last_attempt_at) if running else None,
        "last_attempt_at": _stamp(state.last_attempt_at), "last_error": state.last_error,
        "next_attempt_at": _stamp(state.next_attempt_at), "renews_at": _stamp(state.renews_at),
        "retired_at": _stamp(state.retired_at), "in_flight": running,
    }


def issuance_for_name(engine: LifecycleEngine, name: str) -> dict[str, Any]:
    """Where the automatic certificate of host name ``name`` stands (``wanted`` before the
    engine has seen it; a name served by another certificate is shown so)."""
    state = engine.for_name(name)
    if state is None:
        covered = name not in engine.demanded()
        return {"name": name, "names": [name], "source": None,
                "status": "covered" if covered else "wanted", "issuer": None,
                "issued_by": None, "certificate_id": None, "failures": 0,
                "attempt_started_at": None, "last_attempt_at": None, "last_error": None,
                "next_attempt_at": None, "renews_at": None, "retired_at": None, "in_flight": False}
    return issuance_object(engine, state)


def _engine(ctx: AdminContext) -> LifecycleEngine:
    if ctx.lifecycle is None:
        raise ApiError(503, "unavailable", "automatic certificates are not configured")
    return ctx.lifecycle


@routes.route(
    "GET", "/api/v1/issuance", summary="Every automatically managed certificate's state",
    responses={200: ("One object per managed name set",
                     {"type": "array", "items": ISSUANCE_SCHEMA})},
)
async def list_issuance(ctx: AdminContext, request: IRequest) -> list[dict[str, Any]]:
    engine = _engine(ctx)
    return [issuance_object(engine, state) for state in engine.states()]


@routes.route(
    "POST", "/api/v1/hosts/<int:host_id>/issuance/retry",
    summary="Retry a host's automatic certificates now (clears the backoff)",
    responses={200: ("The state of each of the host's names", {"type": "array",
                                                               "items": ISSUANCE_SCHEMA}),
               404: "Unknown host", 409: "The host has no automatic certificate"},
)
async def retry_host(ctx: AdminContext, request: IRequest, host_id: int) -> list[Any]:
    engine = _engine(ctx)
    host = await ctx.store.transact(lambda txn: txn.get_host(host_id))
    if sources.for_mode(host.ssl_mode) is None:
        raise ApiError(409, "not_automatic",
                       f"host {host_id} has ssl_mode {host.ssl_mode}: Aegis obtains no "
                       "certificate for it", "ssl_mode")
    await engine.refresh()
    shown = []
    for name in host.names:
        state = engine.for_name(name)
        if state is not None and state.status != "retired":
            await engine.retry(state.name)
        shown.append(issuance_for_name(engine, name))
    return shown


@routes.route(
    "POST", "/api/v1/certificates/<int:cert_id>/renew",
    summary="Renew an automatically managed certificate now (clears the backoff)",
    description="For a certificate Aegis renews itself (Let's Encrypt, Cloudflare Origin "
    "with automatic renewal). Others answer 409 saying how they are renewed.",
    responses={200: ("The certificate's lifecycle state", ISSUANCE_SCHEMA),
               404: "Unknown certificate", 409: "Aegis does not renew this certificate"},
)
async def renew_certificate(ctx: AdminContext, request: IRequest, cert_id: int) -> Any:
    engine = _engine(ctx)
    record = await ctx.store.transact(lambda txn: txn.get_certificate(cert_id))
    await engine.refresh()
    managed = [s for s in engine.states()
               if s.certificate_id == cert_id and s.status != "retired"]
    if not managed:
        spec = sources.get(record.source)
        raise ApiError(409, "not_automatic",
                       f"certificate {cert_id} ({spec.label}) is not renewed by Aegis: it is "
                       f"{spec.renewal_note or 'renewed by its source'}", "id")
    state = await engine.retry(managed[0].name, renew=True)
    return issuance_object(engine, state or managed[0])
