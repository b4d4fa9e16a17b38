"""The admin route tables. A feature adds its routes by adding its table here (one line).

Order matters only for the OpenAPI document's listing order.
"""

from __future__ import annotations

from aegis.admin import _certificates, _cloudflare, _hosts, _lifecycle, _monitoring, _trust
from aegis.admin._routing import RouteTable

ROUTE_TABLES: tuple[RouteTable, ...] = (
    _certificates.routes,
    _cloudflare.routes,
    _hosts.routes,
    _lifecycle.routes,
    _monitoring.routes,
    _trust.routes,
)
