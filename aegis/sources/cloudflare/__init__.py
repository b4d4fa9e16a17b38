"""Cloudflare as a certificate source: Origin CA certificates (stored and served by Aegis)
and Edge certificate packs (ordered for Cloudflare's edge; only an audit record kept here).

``client`` talks to the API; ``orders`` validates admin requests; ``origin`` and ``edge`` are
the two services the admin routes call. The fake API for tests and demos is
:mod:`aegis.testing.cloudflare`.
"""

from aegis.sources.cloudflare.client import CloudflareClient, CloudflareError, Credentials
from aegis.sources.cloudflare.edge import EdgeCertificates
from aegis.sources.cloudflare.orders import (
    EdgeOrder,
    FieldError,
    OriginOrder,
    parse_edge_order,
    parse_origin_order,
)
from aegis.sources.cloudflare.origin import CertificateMismatch, OriginCertificates
from aegis.sources.cloudflare.service import (
    CloudflareService,
    CloudflareServices,
    build_cloudflare,
)

__all__ = [
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
