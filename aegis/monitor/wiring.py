"""The monitoring feature built from the settings: channels, monitor, metrics, listener.

:func:`build_monitoring` is what :mod:`aegis.assembly` calls (a few lines there); it returns
a :class:`Monitoring` that the admin routes read (``AdminContext.monitoring``) and whose
:attr:`Monitoring.counters` the TLS and proxy layers bump.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import treq
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.ssl import Certificate
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from aegis.certs.lifecycle import LifecycleEngine
from aegis.config import ConfigError, Settings
from aegis.events import EventPublisher
from aegis.interfaces import IStore
from aegis.listeners import GracefulListener, listen_endpoint
from aegis.localca import LocalAuthority
from aegis.monitor.alerts import TEST, Alert, transition_key
from aegis.monitor.counters import TrafficCounters
from aegis.monitor.delivery import AlertChannel, Dispatcher
from aegis.monitor.inventory import Watched, local_certificates
from aegis.monitor.levels import Thresholds
from aegis.monitor.mail import MailChannel, MailSettings
from aegis.monitor.metrics import CONTENT_TYPE, AegisCollector, metrics_registry, render
from aegis.monitor.monitor import ExpiryMonitor
from aegis.monitor.webhook import WebhookChannel
from aegis.tls.selection import SelectionSource


@dataclass
class Monitoring:
    """The running feature: the monitor, the hot-path counters, the metrics registry."""

    monitor: ExpiryMonitor
    counters: TrafficCounters
    registry: Any

    def metrics(self) -> bytes:
        return render(self.registry)

    def test_alert(self) -> Any:
        """Send a ``test`` alert once to every channel (no retries); fires with
        ``[(label, error or None)]``."""
        now = self.monitor.now()
        alert = Alert(kind=TEST, key=transition_key("test", now.timestamp()), at=now,
                      severity="info", subject="test",
                      summary="test alert from Aegis: alerts reach you",
                      details={"note": "sent by POST /api/v1/alerts/test"})
        return self.monitor.dispatcher.try_once(alert)


def thresholds(settings: Settings) -> Thresholds:
    return Thresholds(
        warning_days=settings.monitor_warning_days,
        warning_fraction=settings.monitor_warning_fraction,
        critical_days=settings.monitor_critical_days,
        critical_fraction=settings.monitor_critical_fraction,
        renewal_margin=settings.monitor_renewal_margin,
        failures=settings.monitor_failures,
    )


def _ca_certificates(settings: Settings) -> tuple[Certificate, ...]:
    if settings.alert_smtp_ca_bundle is None:
        return ()
    loaded = x509.load_pem_x509_certificates(settings.alert_smtp_ca_bundle.read_bytes())
    return tuple(Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
                 for c in loaded)


def mail_settings(settings: Settings) -> MailSettings | None:
    """The SMTP settings, or None when mail is off. @raise ConfigError: incomplete."""
    if not settings.alert_smtp_host:
        return None
    if not settings.alert_smtp_from or not settings.alert_smtp_to:
        raise ConfigError("AEGIS_ALERT_SMTP_HOST is set: AEGIS_ALERT_SMTP_FROM and "
                          "AEGIS_ALERT_SMTP_TO are needed too")
    if settings.alert_smtp_password is not None and not settings.alert_smtp_username:
        raise ConfigError("AEGIS_ALERT_SMTP_PASSWORD is set without AEGIS_ALERT_SMTP_USERNAME")
    if settings.alert_smtp_username and settings.alert_smtp_security == "none":
        raise ConfigError("AEGIS_ALERT_SMTP_SECURITY=none would send the SMTP password in "
                          "clear: use starttls or tls")
    return MailSettings(
        host=settings.alert_smtp_host, port=settings.alert_smtp_port,
        sender=settings.alert_smtp_from, recipients=settings.alert_smtp_to,
        security=settings.alert_smtp_security,
        username=settings.alert_smtp_username or None,
        password=settings.alert_smtp_password, ca_certificates=_ca_certificates(settings),
    )


def channels(settings: Settings, reactor: Any, http: Any = None) -> list[AlertChannel]:
    """The webhook channels (one per URL) and the mail channel, from the settings."""
    found: list[AlertChannel] = []
    if settings.alert_webhook_urls and http is None:
        pool = HTTPConnectionPool(reactor, persistent=False)
        http = treq.client.HTTPClient(Agent(reactor, pool=pool))
    for number, url in enumerate(settings.alert_webhook_urls, start=1):
        found.append(WebhookChannel(http, reactor, url, settings.alert_webhook_secret,
                                    label=f"webhook {number}"))
    mail = mail_settings(settings)
    if mail is not None:
        found.append(MailChannel(reactor, mail))
    return found


def build_monitoring(
    settings: Settings,
    reactor: Any,
    store: IStore,
    publisher: EventPublisher,
    *,
    lifecycle: LifecycleEngine | None,
    selection: SelectionSource | None,
    local: Callable[[], Sequence[Watched]],
    listeners: Mapping[str, Callable[[], bool]],
    alert_channels: Sequence[AlertChannel] | None = None,
    process_metrics: bool = True,
) -> Monitoring:
    """Everything of the feature, not yet started (add ``monitoring.monitor`` to the tree)."""
    dispatcher = Dispatcher(reactor, channels(settings, reactor) if alert_channels is None
                            else alert_channels)
    monitor = ExpiryMonitor(
        reactor, store, dispatcher, publisher, lifecycle=lifecycle, selection=selection,
        local=local, thresholds=thresholds(settings), interval=settings.monitor_interval,
        listeners=listeners,
    )
    counters = TrafficCounters()
    registry = metrics_registry(AegisCollector(monitor, counters, selection),
                                process=process_metrics)
    return Monitoring(monitor, counters, registry)


class LocalWatch:
    """The local certificates as they are now: the CA and admin certificate of the last
    :class:`~aegis.localca.LocalAuthority` (:meth:`update` after maintenance re-issued
    them) and the proxy fallback the selection table serves."""

    def __init__(self, authority: LocalAuthority, selection: SelectionSource) -> None:
        self._authority = authority
        self._selection = selection

    def update(self, authority: LocalAuthority) -> None:
        self._authority = authority

    def __call__(self) -> list[Watched]:
        authority = self._authority
        return local_certificates(authority.ca_cert, authority.admin,
                                  self._selection.current().fallback)


def listener_up(listener: GracefulListener) -> Callable[[], bool]:
    """Whether ``listener`` is running and bound (for health and ``aegis_listener_up``)."""
    return lambda: bool(listener.running) and listener.port() is not None


def metrics_listener(settings: Settings, monitoring: Monitoring, reactor: Any,
                     fatal: Callable[[str], None]) -> GracefulListener | None:
    """The plain ``/metrics`` listener of ``AEGIS_METRICS_LISTEN`` (None when off)."""
    if not settings.metrics_listen:
        return None
    listener = GracefulListener(listen_endpoint(reactor, settings.metrics_listen),
                                metrics_site(monitoring, reactor), reactor,
                                settings.shutdown_timeout, "metrics listener", fatal)
    monitoring.monitor.listeners["metrics"] = listener_up(listener)
    return listener


class MetricsResource(Resource):
    """``GET /metrics`` and nothing else, for ``AEGIS_METRICS_LISTEN`` (no token: bind it
    to loopback or a scrape network)."""

    isLeaf = True

    def __init__(self, monitoring: Monitoring) -> None:
        super().__init__()
        self._monitoring = monitoring

    def render_GET(self, request: Any) -> bytes:
        if request.path != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not Found: only /metrics is served here\n"
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self._monitoring.metrics()


def metrics_site(monitoring: Monitoring, reactor: Any) -> Site:
    site = Site(MetricsResource(monitoring), timeout=30, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site


__all__ = ["LocalWatch", "MetricsResource", "Monitoring", "build_monitoring", "channels",
           "listener_up", "mail_settings", "metrics_listener", "metrics_site", "thresholds"]
