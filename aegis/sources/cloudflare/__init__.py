"""Cloudflare as a certificate source: Origin CA certificates (stored and served by Aegis)
and Edge certificate packs (ordered for Cloudflare's edge; only an audit record kept here).

``client`` talks to the API; ``orders`` validates admin requests; ``origin`` and ``edge`` are
the two services the admin routes call. The fake API for tests and demos is
:mod:`aegis.testing.cloudflare`.
"""

from aegis.certs.sources import DOMAIN_MATCH, SourceSpec, register
from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError, Credentials
from aegis.sources.cloudflare.edge import EdgeCertificates
from aegis.sources.cloudflare.orders import (
    EdgeOrder,
    FieldError,
    OriginOrder,
    parse_edge_order,
    parse_origin_order,
)
from aegis.sources.cloudflare.origin import SOURCE, CertificateMismatch, OriginCertificates
from aegis.sources.cloudflare.service import (
    CloudflareService,
    CloudflareServices,
    build_cloudflare,
)

SPEC = register(SourceSpec(
    name=SOURCE,
    label="Cloudflare Origin CA",
    selection_step=DOMAIN_MATCH,
    renewal_note="renewed by requesting a new certificate (POST "
    "/api/v1/certificates/cloudflare-origin); Aegis does not renew it automatically",
))

__all__ = [
    "SOURCE",
    "SPEC",
    "CertificateMismatch",
    "CloudflareClient",
    "CloudflareError",
    "CloudflareService",
    "CloudflareServices",
    "Credentials",
    "EdgeCertificates",
    "EdgeOrder",
    "FieldError",
    "OriginCertificates",
    "OriginOrder",
    "build_cloudflare",
    "parse_edge_order",
    "parse_origin_order",
]
