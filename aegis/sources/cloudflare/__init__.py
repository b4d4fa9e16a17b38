"""Cloudflare as a certificate source: Origin CA certificates (stored and served by Aegis)
and Edge certificate packs (ordered for Cloudflare's edge; only an audit record kept here).

``client`` talks to the API; ``orders`` validates admin requests; ``issuer`` is the Origin
CA behind ``ICertificateIssuer``, used by the admin request (``requests``) and by the
lifecycle engine for certificates marked for automatic renewal (``renewal``: off by default,
as the spec says Origin certificates are renewed by hand); ``edge`` orders packs. The fake
API for tests and demos is :mod:`aegis.testing.cloudflare`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aegis.certs.sources import DOMAIN_MATCH, SourceSpec, register
from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError, Credentials
from aegis.sources.cloudflare.edge import EdgeCertificates
from aegis.sources.cloudflare.issuer import OriginAnswer, OriginIssuer
from aegis.sources.cloudflare.orders import (
    EdgeOrder,
    FieldError,
    OriginOrder,
    parse_edge_order,
    parse_origin_order,
)
from aegis.sources.cloudflare.origin import SOURCE, CertificateMismatch
from aegis.sources.cloudflare.renewal import NotRenewable, RenewalOff, renewal_demand
from aegis.sources.cloudflare.requests import OriginCertificates
from aegis.sources.cloudflare.service import (
    ClientService,
    CloudflareService,
    CloudflareServices,
    build_cloudflare,
)

if TYPE_CHECKING:
    from aegis.certs.lifecycle.issuers import IssuerContext


def _issuer(context: IssuerContext) -> OriginIssuer:
    """The renewing issuer: its own client on ``AEGIS_CLOUDFLARE_API_BASE``, paced by the
    lifecycle's request budget for that API and closed on shutdown."""
    base = context.settings.cloudflare_api_base
    client = CloudflareClient.create(context.reactor, base, pace=context.pace(base))
    context.add_service("cloudflare-renewals", ClientService(client))
    return OriginIssuer(client, context.clock, store=context.store, wrapper=context.wrapper)


SPEC = register(SourceSpec(
    name=SOURCE,
    label="Cloudflare Origin CA",
    selection_step=DOMAIN_MATCH,
    issuer=_issuer,
    demand=renewal_demand,
    renewal_note="renewed by hand, and Aegis does not renew it automatically: request a new "
    "certificate (POST /api/v1/certificates/cloudflare-origin), or switch automatic renewal "
    "on (PATCH /api/v1/certificates/{id} with \"auto_renew\": true and a Cloudflare "
    "credential)",
))

__all__ = [
    "SOURCE",
    "SPEC",
    "CertificateMismatch",
    "ClientService",
    "CloudflareClient",
    "CloudflareError",
    "CloudflareService",
    "CloudflareServices",
    "Credentials",
    "EdgeCertificates",
    "EdgeOrder",
    "FieldError",
    "NotRenewable",
    "OriginAnswer",
    "OriginCertificates",
    "OriginIssuer",
    "OriginOrder",
    "RenewalOff",
    "build_cloudflare",
    "parse_edge_order",
    "parse_origin_order",
]
