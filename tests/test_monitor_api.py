"""Health, banner, test alert and /metrics through the real admin resource (StubTreq), over
a monitor on a Clock and a memory store; the monitor's levels and alerts on the clock."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock

from aegis import events
from aegis.admin import AdminAddress, AdminAPI, AdminContext, TokenVerifier
from aegis.admin._guards import token_digest
from aegis.certs import sources
from aegis.config import Settings
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.events import EventPublisher
from aegis.monitor.alerts import Alert
from aegis.monitor.delivery import DeliveryError
from aegis.monitor.levels import Thresholds, assess
from aegis.monitor.wiring import LocalWatch, Monitoring, build_monitoring
from aegis.store.memory import MemoryStore
from aegis.store.records import HostFields
from aegis.testing.issuer import FakeCA
from aegis.tls.selection import SelectionState
from tests.test_admin_api import TOKEN, Client, authority, error_of
from tests.year_rig import manual_fields

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


class Recording:
    """An alert channel that keeps what it is given (a fake of the external receiver)."""

    def __init__(self, label: str = "recording", broken: bool = False) -> None:
        self.label, self.broken, self.sent = label, broken, list[Alert]()

    def send(self, alert: Alert) -> Any:
        if self.broken:
            return fail(DeliveryError(f"{self.label}: answered HTTP 500"))
        self.sent.append(alert)
        return succeed(None)


class Setup:
    def __init__(self, cache: Path, channels: list[Any] | None = None) -> None:
        # Every source module, even if another test imported one source first (the
        # registry then skips loading the rest; fixed on the h14cf branch).
        sources.load_sources()
        self.clock = Clock()
        self.clock.advance(START.timestamp())
        self.store = MemoryStore(now=lambda: START)
        self.wrapper = KeyWrapper(MasterKey.generate())
        self.publisher = EventPublisher(self.clock)
        self.local = authority(cache)
        self.ca = FakeCA(START - 400 * DAY)
        self.up = {"https": True}
        from aegis.certs.registry import CertificateRegistry

        self.registry = CertificateRegistry(self.store, self.wrapper, self.clock)
        self.selection = SelectionState(self.registry, self.local.proxy)
        self.channel = Recording()
        self.monitoring: Monitoring = build_monitoring(
            Settings(), self.clock, self.store, self.publisher, lifecycle=None,
            selection=self.selection, local=LocalWatch(self.local, self.selection),
            listeners={"https": lambda: self.up["https"]},
            alert_channels=[self.channel] if channels is None else channels,
            process_metrics=False)
        self.api = AdminAPI(
            AdminContext(store=self.store, wrapper=self.wrapper, local_ca=self.local,
                         clock=self.clock, monitoring=self.monitoring),
            TokenVerifier(token_digest(TOKEN)), AdminAddress(None, lambda: 9443))
        self.client = Client(self.api)

    def upload(self, name: str, age: timedelta, lifetime: timedelta, bind: bool = True) -> int:
        fields = manual_fields(self.ca, self.wrapper, name, sources.upload_source().name,
                               START - age, lifetime, False)

        def work(txn: Any) -> int:
            record = txn.add_certificate(fields)
            if bind:
                txn.add_host(HostFields(domain=name, upstream="http://127.0.0.1:9",
                                        ssl_mode=sources.MODE_BOUND, ssl_cert_id=record.id))
            return int(record.id)

        cert_id = self.store.transact_blocking(work)
        self.registry.load_blocking()
        self.selection.set_hosts(self.store.transact_blocking(lambda txn: txn.list_hosts()))
        return cert_id

    def start(self) -> None:
        self.monitoring.monitor.startService()
        self.clock.advance(1)  # the first check runs at once

    def get(self, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
        response, body = self.client.call("GET", path, token=token)
        return response.code, body


def kinds(channel: Recording) -> list[str]:
    """Alert kinds sent, leaving out clock jumps (these tests move the clock by days)."""
    return [a.kind for a in channel.sent if a.kind != "clock_jumped"]


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "monitor-api-ca"


# -- levels --------------------------------------------------------------------------------


@pytest.mark.parametrize(("lifetime", "warning_left", "critical_left"), [
    (timedelta(days=6), timedelta(days=2), timedelta(days=0.6)),
    (timedelta(days=45), timedelta(days=15), timedelta(days=4.5)),
    (timedelta(days=90), timedelta(days=30), timedelta(days=7)),
    (timedelta(days=365), timedelta(days=30), timedelta(days=7)),
    (timedelta(days=5475), timedelta(days=30), timedelta(days=7)),
])
def test_manual_thresholds_are_relative_to_the_lifetime(
    lifetime: timedelta, warning_left: timedelta, critical_left: timedelta,
) -> None:
    t = Thresholds()
    not_before = START
    not_after = START + lifetime
    second = timedelta(seconds=1)
    assert assess(not_before, not_after, not_after - warning_left - second, t).level == "ok"
    assert assess(not_before, not_after, not_after - warning_left, t).level == "warning"
    assert assess(not_before, not_after, not_after - critical_left - second,
                  t).level == "warning"
    assert assess(not_before, not_after, not_after - critical_left, t).level == "critical"
    assert assess(not_before, not_after, not_after, t).level == "expired"
    assert assess(not_before, not_after, not_after - warning_left - second,
                  t).changes_at == not_after - warning_left


def test_renewed_certificates_alert_on_an_overdue_or_failing_renewal() -> None:
    t = Thresholds()
    not_before, not_after = START, START + timedelta(days=90)
    renews_at = not_after - timedelta(days=30)
    # 90 days: the manual rule would warn at 30 days left; a renewed one is fine until
    # its renewal is a day overdue
    assert assess(not_before, not_after, renews_at, t, renews_at).level == "ok"
    overdue = renews_at + timedelta(days=1)
    assert assess(not_before, not_after, overdue, t, renews_at).reason == "renewal_overdue"
    assert assess(not_before, not_after, renews_at, t, renews_at, failures=3).reason == (
        "renewal_failing")
    late = overdue + (not_after - overdue) / 2
    assert assess(not_before, not_after, late, t, renews_at).level == "critical"
    # a 6-day certificate renewed at half: the margin is 5% of the lifetime, not a day
    short_after = START + timedelta(days=6)
    short_renew = START + timedelta(days=3)
    hours = timedelta(hours=7.2)
    assert assess(START, short_after, short_renew + hours - timedelta(seconds=1), t,
                  short_renew).level == "ok"
    assert assess(START, short_after, short_renew + hours, t, short_renew).level == "warning"


# -- the monitor on the clock ------------------------------------------------------------------


def test_each_level_alerts_once_and_a_restart_repeats_nothing(cache: Path) -> None:
    setup = Setup(cache)
    setup.upload("shop.example.net", age=timedelta(days=50), lifetime=timedelta(days=90))
    setup.start()
    assert kinds(setup.channel) == []
    setup.clock.advance(DAY.total_seconds() * 10 + 1)  # 30 days left: warning
    setup.clock.advance(60)
    assert kinds(setup.channel) == ["certificate_warning"]
    setup.clock.advance(DAY.total_seconds() * 23)  # 7 days left: critical
    assert kinds(setup.channel)[-1] == "certificate_critical"
    setup.monitoring.monitor.stopService()
    again = Setup(cache)
    again.store, again.registry = setup.store, setup.registry
    again.clock = setup.clock
    restarted = build_monitoring(
        Settings(), setup.clock, setup.store, setup.publisher, lifecycle=None,
        selection=setup.selection, local=LocalWatch(setup.local, setup.selection),
        listeners={}, alert_channels=[again.channel], process_metrics=False)
    restarted.monitor.startService()
    setup.clock.advance(120)
    assert kinds(again.channel) == []  # already in critical before the restart: no repeat
    setup.clock.advance(DAY.total_seconds() * 7)
    assert kinds(again.channel) == ["certificate_expired"]
    keys = [a.key for a in setup.channel.sent + again.channel.sent]
    assert len(keys) == len(set(keys))


def test_renewal_failed_once_per_streak_then_recovered(cache: Path) -> None:
    setup = Setup(cache)
    setup.start()
    for failures in (1, 2, 3):
        setup.publisher.publish(events.CERT_FAILED, name="a.example.com", source="acme",
                                failures=failures, reason="AcmeError", error="timeout",
                                next_attempt_at=None, certificate_id=None)
        setup.clock.advance(60)
    assert kinds(setup.channel) == ["renewal_failed"]
    setup.publisher.publish(events.CERT_RENEWED, name="a.example.com", source="acme",
                            certificate_id=4)
    setup.clock.advance(60)
    assert kinds(setup.channel) == ["renewal_failed", "renewal_recovered"]
    _code, body = setup.get("/api/v1/health", token=None)
    assert json.loads(body)["last_renewal_error"] == "AcmeError"


def test_deleting_a_serving_certificate_alerts(cache: Path) -> None:
    setup = Setup(cache)
    cert_id = setup.upload("bound.example.net", age=DAY, lifetime=timedelta(days=365))
    setup.start()
    setup.clock.advance(60)

    def delete(txn: Any) -> None:
        for host in txn.list_hosts():
            txn.replace_host(host.id, replace(host.fields(), ssl_cert_id=None,
                                              ssl_mode=sources.MODE_NONE))
        txn.delete_certificate(cert_id)

    setup.store.transact_blocking(delete)
    setup.publisher.publish(events.CERT_DELETED, certificate_id=cert_id, source="custom")
    setup.clock.advance(60)
    assert kinds(setup.channel) == ["certificate_deleted"]
    assert setup.channel.sent[0].details["serving"] == ["bound.example.net"]


def test_a_full_store_alerts_within_a_minute_and_recovers(cache: Path) -> None:
    setup = Setup(cache)
    setup.start()
    real = setup.store.transact

    def refusing(work: Any) -> Any:
        from aegis.store.errors import StoreFull

        return fail(StoreFull("database or disk is full"))

    setup.store.transact = refusing  # type: ignore[method-assign]
    setup.clock.advance(60)
    assert kinds(setup.channel) == ["store_failing"]
    code, body = setup.get("/api/v1/health", token=None)
    assert code == 503 and json.loads(body)["store"] == {"reachable": False, "writable": False}
    setup.store.transact = real  # type: ignore[method-assign]
    setup.clock.advance(60)
    assert kinds(setup.channel) == ["store_failing", "store_recovered"]
    assert setup.get("/api/v1/health", token=None)[0] == 200


# -- health -----------------------------------------------------------------------------------


def test_health_needs_no_token_and_shows_no_names(cache: Path) -> None:
    setup = Setup(cache)
    setup.upload("secret-customer.example.net", age=timedelta(days=80),
                 lifetime=timedelta(days=90))
    setup.start()
    code, body = setup.get("/api/v1/health", token=None)
    assert code == 200
    health = json.loads(body)
    assert health["status"] == "warning" and health["listeners"] == {"https": True}
    assert health["certificates"]["warning"] == 1 and health["certificates"]["total"] == 4
    assert b"secret-customer" not in body and b"detail" not in body


def test_verbose_health_needs_the_token(cache: Path) -> None:
    setup = Setup(cache)
    setup.upload("detail.example.net", age=DAY, lifetime=timedelta(days=90))
    setup.start()
    for token in (None, "wrong-token-0123456789"):
        code, body = setup.get("/api/v1/health?verbose=1", token=token)
        assert code == 401 and error_of(body)["code"] == "unauthorized"
    code, body = setup.get("/api/v1/health?verbose=1")
    rows = json.loads(body)["detail"]["certificates"]
    assert code == 200 and {"detail.example.net"} <= {n for r in rows for n in r["names"]}
    assert setup.get("/api/v1/health?verbose", token=None)[0] == 401
    assert setup.get("/api/v1/health?verbose=0", token=None)[0] == 200


def test_health_is_503_when_a_listener_is_down_or_a_serving_certificate_expired(
    cache: Path,
) -> None:
    setup = Setup(cache)
    setup.upload("gone.example.net", age=timedelta(days=89), lifetime=timedelta(days=90))
    setup.start()
    setup.up["https"] = False
    code, body = setup.get("/api/v1/health", token=None)
    assert code == 503 and json.loads(body)["problems"] == ["listener_down"]
    setup.up["https"] = True
    assert setup.get("/api/v1/health", token=None)[0] == 200
    setup.clock.advance(DAY.total_seconds())
    code, body = setup.get("/api/v1/health", token=None)
    assert code == 503 and json.loads(body)["problems"] == ["certificate_expired"]


# -- banner, test alert, metrics ----------------------------------------------------------------


def test_banner_says_what_fails_since_when(cache: Path) -> None:
    setup = Setup(cache)
    setup.upload("soon.example.net", age=timedelta(days=85), lifetime=timedelta(days=90))
    setup.start()
    setup.clock.advance(60)
    code, body = setup.get("/api/v1/alerts/banner")
    banner = json.loads(body)
    assert code == 200 and banner["level"] == "critical" and banner["count"] == 1
    (item,) = banner["items"]
    assert item["names"] == ["soon.example.net"] and item["since"] == "2026-03-01T00:00:01Z"
    assert setup.get("/api/v1/alerts/banner", token=None)[0] == 401


def test_send_test_alert(cache: Path) -> None:
    broken = Recording("webhook 2", broken=True)
    setup = Setup(cache, channels=[Recording("webhook 1"), broken])
    setup.start()
    response, body = setup.client.call("POST", "/api/v1/alerts/test")
    result = json.loads(body)
    assert response.code == 200 and result["delivered"] is False
    assert result["channels"] == [
        {"channel": "webhook 1", "delivered": True, "error": None},
        {"channel": "webhook 2", "delivered": False, "error": "webhook 2: answered HTTP 500"}]
    none = Setup(cache, channels=[])
    response, body = none.client.call("POST", "/api/v1/alerts/test")
    assert response.code == 409 and error_of(body)["code"] == "no_channels"


def test_metrics_need_the_token_and_parse(cache: Path) -> None:
    setup = Setup(cache)
    cert_id = setup.upload("metrics.example.net", age=DAY, lifetime=timedelta(days=90))
    setup.start()
    setup.monitoring.counters.handshake("domain_match")
    setup.monitoring.counters.proxied("metrics.example.net", 200, 12)
    setup.monitoring.counters.proxied("unknown.example.net", 502, None)
    assert setup.get("/metrics", token=None)[0] == 401
    code, body = setup.get("/metrics")
    assert code == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    labels = (("id", str(cert_id)), ("issuer", "Aegis Fake Intermediate"),
              ("name", "metrics.example.net"), ("source", "custom"))
    expiry = samples[("aegis_certificate_expiration_timestamp_seconds", labels)]
    assert expiry == (START - DAY + timedelta(days=90)).timestamp()
    assert samples[("aegis_certificate_ready_status", labels)] == 1
    assert samples[("aegis_tls_handshakes_total", (("step", "domain_match"),))] == 1
    assert samples[("aegis_proxy_requests_total", (("code_class", "2xx"),
                                                   ("host", "metrics.example.net")))] == 1
    assert samples[("aegis_proxy_requests_total", (("code_class", "5xx"),
                                                   ("host", "other")))] == 1
    assert samples[("aegis_proxy_upstream_latency_seconds_bucket", (("le", "0.025"),))] == 1
    cm = [k for k in samples if k[0] == "certmanager_certificate_expiration_timestamp_seconds"]
    assert len(cm) == 4  # the upload and the three local certificates
