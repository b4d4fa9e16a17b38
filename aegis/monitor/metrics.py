"""Prometheus metrics, folded at scrape time by one custom collector.

Names follow what users already alert on: cert-manager's
``certmanager_certificate_expiration_timestamp_seconds``, ``..._renewal_timestamp_seconds``
and ``..._ready_status`` exist here as ``aegis_certificate_*`` with the labels ``id``,
``source``, ``issuer`` and ``name`` (the main name), and — so existing cert-manager rules and
dashboards work unchanged — under the cert-manager names and labels too (``namespace`` is
``aegis``). Everything the hot paths count (:mod:`aegis.monitor.counters`) and the monitor
knows is read when Prometheus scrapes, never per request. ``docs/monitoring.md`` lists every
series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aegis.monitor.counters import LATENCY_BOUNDS_MS, TrafficCounters
from aegis.monitor.inventory import Watched
from aegis.monitor.levels import SEVERITY
from aegis.monitor.monitor import ExpiryMonitor
from aegis.tls.selection import SelectionSource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CERT_LABELS = ["id", "source", "issuer", "name"]
CM_LABELS = ["name", "namespace", "issuer_name", "issuer_kind", "issuer_group"]
NAMESPACE = "aegis"


def _cert_labels(item: Watched) -> list[str]:
    ident = str(item.certificate_id) if item.certificate_id is not None else item.subject
    return [ident, item.source, item.issuer, item.name]


def _cm_labels(item: Watched) -> list[str]:
    ident = str(item.certificate_id) if item.certificate_id is not None else item.subject
    return [f"{item.name}-{ident}", NAMESPACE, item.issuer, item.source, NAMESPACE]


class AegisCollector(Collector):
    """Yields every Aegis series from the monitor and the traffic counters."""

    def __init__(self, monitor: ExpiryMonitor, counters: TrafficCounters,
                 selection: SelectionSource | None = None) -> None:
        self._monitor = monitor
        self._counters = counters
        self._selection = selection
        self._requests: dict[tuple[str, int], int] = {}

    def collect(self) -> Iterator[Metric]:
        yield from self._certificates()
        yield from self._lifecycle()
        yield from self._tls()
        yield from self._proxy()
        yield from self._alerts()

    def _certificates(self) -> Iterator[Metric]:
        evaluation = self._monitor.evaluation
        expiry = GaugeMetricFamily("aegis_certificate_expiration_timestamp_seconds",
                                   "The certificate's not-after, Unix seconds", labels=CERT_LABELS)
        start = GaugeMetricFamily("aegis_certificate_not_before_timestamp_seconds",
                                  "The certificate's not-before, Unix seconds", labels=CERT_LABELS)
        renewal = GaugeMetricFamily("aegis_certificate_renewal_timestamp_seconds",
                                    "When Aegis plans to renew it, Unix seconds (certificates "
                                    "Aegis renews)", labels=CERT_LABELS)
        ready = GaugeMetricFamily("aegis_certificate_ready_status",
                                  "1 if the certificate is valid and not expired, else 0",
                                  labels=CERT_LABELS)
        level = GaugeMetricFamily("aegis_certificate_level",
                                  "Monitor level: 0 ok, 1 warning, 2 critical, 3 expired",
                                  labels=CERT_LABELS)
        failures = GaugeMetricFamily("aegis_certificate_renewal_failures",
                                     "Consecutive failed renewal attempts", labels=CERT_LABELS)
        cm_expiry = GaugeMetricFamily("certmanager_certificate_expiration_timestamp_seconds",
                                      "cert-manager compatible not-after", labels=CM_LABELS)
        cm_renewal = GaugeMetricFamily("certmanager_certificate_renewal_timestamp_seconds",
                                       "cert-manager compatible renewal time", labels=CM_LABELS)
        cm_ready = GaugeMetricFamily("certmanager_certificate_ready_status",
                                     "cert-manager compatible ready condition",
                                     labels=[*CM_LABELS, "condition"])
        now = self._monitor.now()
        for subject in sorted(evaluation.assessments):
            item, assessment = evaluation.watched[subject], evaluation.assessments[subject]
            if item.retired:
                continue
            labels, cm = _cert_labels(item), _cm_labels(item)
            expiry.add_metric(labels, item.not_after.timestamp())
            start.add_metric(labels, item.not_before.timestamp())
            cm_expiry.add_metric(cm, item.not_after.timestamp())
            if item.renews_at is not None:
                renewal.add_metric(labels, item.renews_at.timestamp())
                cm_renewal.add_metric(cm, item.renews_at.timestamp())
            is_ready = item.not_before <= now < item.not_after
            ready.add_metric(labels, 1.0 if is_ready else 0.0)
            for condition in ("True", "False", "Unknown"):
                value = (condition == "True") == is_ready and condition != "Unknown"
                cm_ready.add_metric([*cm, condition], 1.0 if value else 0.0)
            level.add_metric(labels, float(SEVERITY[assessment.level]))
            failures.add_metric(labels, float(item.failures))
        yield from (expiry, start, renewal, ready, level, failures, cm_expiry, cm_renewal,
                    cm_ready)

    def _lifecycle(self) -> Iterator[Metric]:
        monitor = self._monitor
        attempts = CounterMetricFamily("aegis_issuance_attempts",
                                       "Certificate attempts started (obtain and renew)",
                                       labels=["source"])
        for source, count in sorted(monitor.attempts.items()):
            attempts.add_metric([source], count)
        failed = CounterMetricFamily("aegis_issuance_failures",
                                     "Failed certificate attempts", labels=["source", "reason"])
        for (source, reason), count in sorted(monitor.failures.items()):
            failed.add_metric([source, reason], count)
        store = GaugeMetricFamily("aegis_store_writable",
                                  "1 if the store took the monitor's last heartbeat write")
        store.add_metric([], 0.0 if monitor.store_ok is False else 1.0)
        listeners = GaugeMetricFamily("aegis_listener_up", "1 if the listener is bound",
                                      labels=["listener"])
        for name, up in sorted(monitor.listeners.items()):
            listeners.add_metric([name], 1.0 if up() else 0.0)
        checks = CounterMetricFamily("aegis_monitor_checks", "Expiry monitor checks run")
        checks.add_metric([], monitor.checks)
        jumps = CounterMetricFamily("aegis_clock_jumps",
                                    "Times the clock was seen jumping forward")
        jumps.add_metric([], monitor.clock_jumps)
        yield from (attempts, failed, store, listeners, checks, jumps)

    def _tls(self) -> Iterator[Metric]:
        handshakes = CounterMetricFamily("aegis_tls_handshakes",
                                         "TLS handshakes by certificate selection step",
                                         labels=["step"])
        for step, count in sorted(self._counters.handshakes.items()):
            handshakes.add_metric([step], count)
        refused = CounterMetricFamily("aegis_tls_handshake_failures",
                                      "TLS handshakes refused at certificate selection",
                                      labels=["reason"])
        for reason, count in sorted(self._counters.handshake_failures.items()):
            refused.add_metric([reason], count)
        yield from (handshakes, refused)

    def _host_of(self) -> Callable[[str], str]:
        table = self._selection.current() if self._selection is not None else None

        def host_of(name: str) -> str:
            host = table.host_for(name) if table is not None and name else None
            return host.domain if host is not None else "other"

        return host_of

    def _proxy(self) -> Iterator[Metric]:
        raw = self._counters.requests
        host_of = self._host_of()
        for (name, status_class), count in list(raw.items()):
            key = (host_of(name), status_class)
            self._requests[key] = self._requests.get(key, 0) + count
        raw.clear()
        requests = CounterMetricFamily("aegis_proxy_requests",
                                       "Proxied requests by host and status class",
                                       labels=["host", "code_class"])
        for (host, status_class), count in sorted(self._requests.items()):
            shown = f"{status_class}xx" if status_class else "aborted"
            requests.add_metric([host, shown], count)
        counts, total, buckets = self._counters.latency_buckets, 0, []
        for bound, count in zip(LATENCY_BOUNDS_MS, counts, strict=False):
            total += count
            buckets.append((repr(bound / 1000), total))
        total += counts[-1]
        buckets.append(("+Inf", total))
        latency = HistogramMetricFamily(
            "aegis_proxy_upstream_latency_seconds",
            "Time from forwarding a request to the upstream's response head",
            buckets=buckets, sum_value=self._counters.latency_sum_ms / 1000)
        yield from (requests, latency)

    def _alerts(self) -> Iterator[Metric]:
        raised = CounterMetricFamily("aegis_alerts", "Alerts raised by kind", labels=["kind"])
        for kind, count in sorted(self._monitor.alerts_raised.items()):
            raised.add_metric([kind], count)
        delivered = CounterMetricFamily("aegis_alert_deliveries",
                                        "Alerts delivered by channel and kind",
                                        labels=["channel", "kind"])
        given_up = CounterMetricFamily("aegis_alert_delivery_failures",
                                       "Alerts a channel gave up on after every retry",
                                       labels=["channel", "kind"])
        for label, stats in sorted(self._monitor.dispatcher.stats.items()):
            for kind, count in sorted(stats.delivered.items()):
                delivered.add_metric([label, kind], count)
            for kind, count in sorted(stats.failed.items()):
                given_up.add_metric([label, kind], count)
        yield from (raised, delivered, given_up)


def metrics_registry(collector: AegisCollector, process: bool = True) -> CollectorRegistry:
    """A registry with ``collector`` and (by default) the process, platform and GC
    collectors of ``prometheus_client``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def render(registry: Any) -> bytes:
    """The text exposition format (version 0.0.4)."""
    rendered: bytes = generate_latest(registry)
    return rendered


__all__ = ["CONTENT_TYPE", "AegisCollector", "metrics_registry", "render"]
