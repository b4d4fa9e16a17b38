"""Wiring: the Cloudflare client and both services, and a Service that closes the pool.

Why one factory: ``aegis.tap.build_tree`` should need one call to give the admin API
everything Cloudflare-related, and one child service so the client's connection pool is
closed on shutdown like every other resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from aegis.crypto.keywrap import KeyWrapper
from aegis.events import EventPublisher
from aegis.interfaces import IStore
from aegis.sources.cloudflare.client import CloudflareClient
from aegis.sources.cloudflare.edge import EdgeCertificates
from aegis.sources.cloudflare.requests import OriginCertificates
from aegis.store.records import CertificateRecord


@dataclass(frozen=True)
class CloudflareServices:
    """What the admin routes use (``AdminContext.cloudflare``)."""

    client: CloudflareClient
    origin: OriginCertificates
    edge: EdgeCertificates


def build_cloudflare(
    reactor: Any,
    base_url: str,
    store: IStore,
    wrapper: KeyWrapper,
    on_stored: Callable[[CertificateRecord], object] | None = None,
    events: EventPublisher | None = None,
    **client_options: Any,
) -> CloudflareServices:
    """The client (own connection pool, ``reactor`` passed in) and both services.

    ``on_stored`` is called with each new Origin CA record: pass the certificate registry's
    refresh so the HTTPS listener serves it at once; ``events`` (the lifecycle's publisher)
    hears ``cert_obtained`` for it.
    """
    client = CloudflareClient.create(reactor, base_url, **client_options)
    return CloudflareServices(
        client=client,
        origin=OriginCertificates(client, store, wrapper, reactor, on_stored=on_stored,
                                  events=events),
        edge=EdgeCertificates(client, store, reactor),
    )


class ClientService(Service):
    """Closes a client's pooled connections when the tree stops."""

    def __init__(self, client: CloudflareClient) -> None:
        self.client = client

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.client.close()


class CloudflareService(ClientService):
    """The admin API's client, closed when the tree stops."""

    name = "cloudflare"

    def __init__(self, services: CloudflareServices) -> None:
        super().__init__(services.client)
        self.services = services
