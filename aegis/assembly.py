"""The object graph of a running Aegis: who gets which collaborator.

:func:`build_tree` is called by :func:`aegis.tap.makeService` after the blocking start-up
work (database opened, master key proven, local CA current). It loads every certificate
into memory and builds the service tree; nothing here waits on the network.

How a change travels (see docs/architecture.md): an admin write commits to the store, then
calls ``ProxyState.reload``, which reloads the certificate registry, re-issues the proxy
fallback if the host names changed, and swaps the SNI selection table and the router's host
table; the lifecycle engine re-reads what is demanded at the same moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from aegis.admin import AdminCertificateCreator, AdminContext, build_admin_service
from aegis.bootstrap import LocalStartup, Storage
from aegis.certs.lifecycle import (
    ChallengeResponders,
    IssuerContext,
    LifecycleEngine,
    build_issuers,
)
from aegis.certs.registry import CertificateRegistry
from aegis.certs.service import CertificateService
from aegis.certs.trust import load_trust_roots
from aegis.config import Settings
from aegis.control import Reloader, SignalControl, open_access_log
from aegis.events import EventPublisher
from aegis.hosts.router import HostRouter
from aegis.hosts.state import ProxyState, host_names
from aegis.listeners import GracefulListener, listen_endpoint
from aegis.localca import LocalAuthority, LocalCAMaintenance, ProxyFallbackReissuer
from aegis.monitor.wiring import LocalWatch, build_monitoring, listener_up, metrics_listener
from aegis.proxy import ProxyEngine, proxy_factory
from aegis.proxy.routing import ProxyLimits
from aegis.service import AegisService, OnStop
from aegis.sources.cloudflare import CloudflareService, build_cloudflare
from aegis.store._runner import StoreThread
from aegis.store.records import HostRecord
from aegis.threads import reactor_pool_runner
from aegis.tls.endpoint import https_endpoint
from aegis.tls.selection import SelectionState

log = Logger()

def _child(root: AegisService, name: str, service: Service) -> None:
    service.setName(name)
    service.setServiceParent(root)


def build_tree(
    settings: Settings,
    storage: Storage,
    store_thread: StoreThread,
    reactor: Any,
    local: LocalStartup,
) -> AegisService:
    """The service tree; see :mod:`aegis.service` for its children and their stop order."""
    store, wrapper = storage.store, storage.wrapper
    root = AegisService(reactor)
    _child(root, "store-close", OnStop(storage.close))
    _child(root, "store", store_thread)
    access = open_access_log(settings, reactor)
    if access is not None:  # stops after the listeners drained: their last lines are kept
        _child(root, "access-log", OnStop(access.file.close))

    def now() -> datetime:
        return datetime.fromtimestamp(reactor.seconds(), UTC)

    cpu = reactor_pool_runner(reactor)
    registry = CertificateRegistry(store, wrapper, reactor, runner=cpu)
    registry.load_blocking()
    hosts = store.transact_blocking(lambda txn: txn.list_hosts())

    # Every source's issuer, built from one context (aegis.certs.lifecycle.issuers); the
    # engine reloads through ProxyState, which exists only below: late binding.
    publisher = EventPublisher(reactor)
    sources_context = IssuerContext(reactor=reactor, clock=reactor, store=store,
                                    wrapper=wrapper, settings=settings, events=publisher)
    issuers = build_issuers(sources_context)
    proxy_holder: list[ProxyState] = []
    lifecycle = LifecycleEngine(
        reactor, store, wrapper, issuers, reload=lambda: proxy_holder[0].reload(),
        publisher=publisher, preload=sources_context.preloads,
    )
    selection = SelectionState(registry, local.authority.proxy, lifecycle, hosts)
    local_watch = LocalWatch(local.authority, selection)
    monitoring = build_monitoring(settings, reactor, store, publisher, lifecycle=lifecycle,
                                  selection=selection, local=local_watch, listeners={})
    registry.subscribe(lambda _snapshot: monitoring.monitor.poke())

    def https_port() -> int | None:
        if settings.public_https_port is not None:
            return settings.public_https_port  # what clients dial, e.g. behind -p 443:8443
        return https.port_number()

    router = HostRouter(selection, https_port, ChallengeResponders(sources_context.responders),
                        now)

    def hosts_changed(current: Sequence[HostRecord]) -> None:
        if lifecycle.running:  # at start-up the engine reads the demand itself
            lifecycle.refresh().addErrback(
                lambda failure: log.failure("lifecycle refresh failed", failure))

    proxy = ProxyState(
        store, registry, selection, router,
        ProxyFallbackReissuer(local.local_ca, cpu, now),
        host_names(hosts), hosts_changed,
    )
    proxy_holder.append(proxy)
    proxy.publish_hosts(hosts)

    engine = ProxyEngine(router, reactor, ProxyLimits(
        connect_timeout=settings.proxy_connect_timeout,
        upstream_timeout=settings.proxy_upstream_timeout,
        header_timeout=settings.proxy_header_timeout,
        keepalive_timeout=settings.proxy_keepalive_timeout,
        body_idle_timeout=settings.proxy_body_timeout,
        request_timeout=settings.proxy_request_timeout,
        via=settings.proxy_via.encode("ascii"),
        access_log=None if access is None else access.record,
    ), counters=monitoring.counters)
    http = GracefulListener(
        listen_endpoint(reactor, settings.http_listen),
        proxy_factory(router, reactor, engine=engine), reactor, settings.shutdown_timeout,
        "HTTP listener", root.fatal,
    )
    https = GracefulListener(
        https_endpoint(reactor, settings.https_listen, selection,
                       handshake_timeout=settings.tls_handshake_timeout,
                       counters=monitoring.counters),
        proxy_factory(router, reactor, engine=engine),
        reactor, settings.shutdown_timeout, "HTTPS listener", root.fatal,
    )

    cloudflare = build_cloudflare(reactor, settings.cloudflare_api_base, store, wrapper,
                                  on_stored=lambda _record: proxy.reload(), events=publisher)
    # Stops after both listeners drained (children stop in reverse order).
    _child(root, "upstream-pool", OnStop(engine.pool.close))
    _child(root, "lifecycle", lifecycle)
    for name, service in sources_context.services:
        _child(root, name, service)  # type: ignore[arg-type]
    _child(root, "cloudflare", CloudflareService(cloudflare))
    _child(root, "http", http)
    _child(root, "https", https)
    _child(root, "monitor", monitoring.monitor)
    metrics = metrics_listener(settings, monitoring, reactor, root.fatal)
    if metrics is not None:
        _child(root, "metrics", metrics)

    admin_creator = AdminCertificateCreator(local.authority.admin)
    certificates = CertificateService(
        store, wrapper, registry, reactor, runner=cpu, trust_roots=load_trust_roots(),
        publish=proxy.reload, selection=selection, lifecycle=lifecycle, events=publisher,
    )
    context = AdminContext(
        store=store, wrapper=wrapper, local_ca=local.authority, clock=reactor,
        certificates=certificates, cloudflare=cloudflare, selection=selection, proxy=proxy,
        lifecycle=lifecycle, events=publisher, monitoring=monitoring,
    )
    admin = build_admin_service(
        settings.admin_listen, context, local.verifier, reactor, settings.shutdown_timeout,
        root.fatal, creator=admin_creator,
    )
    _child(root, "admin", admin)
    monitoring.monitor.listeners.update(http=listener_up(http), https=listener_up(https),
                                        admin=listener_up(admin))

    def renewed(authority: LocalAuthority) -> None:
        admin_creator.replace(authority)
        selection.set_fallback(authority.proxy)
        local_watch.update(authority)

    maintenance = LocalCAMaintenance(
        local.local_ca, local.admin_names,
        lambda: store.transact(lambda txn: [n for h in txn.list_hosts() for n in h.names]),
        cpu, reactor, publish=[renewed],
    )
    _child(root, "local-ca", maintenance)
    _child(root, "signals", SignalControl(reactor, Reloader(
        [access.file.reopen] if access is not None else [],
        [("certificates and hosts", proxy.reload), ("local CA", maintenance.check)])))
    return root
