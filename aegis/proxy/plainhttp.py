"""The plain-HTTP listener's answer while no proxy host matches the request.

Every request gets a short plain-text 404 naming nothing internal. The hosts issue routes
matching hosts to their upstreams (and redirects, ACME challenges) in front of this.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class NoSuchHost(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"404 Not Found: no proxy host is configured for this name.\n"


def plain_http_factory() -> IProtocolFactory:
    site = Site(NoSuchHost())
    site.displayTracebacks = False
    site.noisy = False
    return site
