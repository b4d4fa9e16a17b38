"""The simulated year (issue 15's acceptance): 365 days, 100 certificates, injected faults.

The rig (:mod:`tests.year_rig`) runs the real engine, registry, selection table, monitor
and alert channels on a ``Clock``; the webhook and mail go to real receivers on loopback
(the real reactor carries them while the simulated clock stands still). Population:
12 six-day and 48 45-day ACME names from a fake CA, 15 90-day and 12 one-year uploads, 8
fifteen-year Cloudflare Origin certificates (manual) and 5 with automatic renewal; an
operator replaces an attended manual certificate when its ``certificate_critical`` alert
arrives, the others are left to expire. Faults:

* Cloudflare answers 5xx for 5 days when the automatic origin renewals fall due (day 28);
* the CA is down for 5 days (day 60);
* the CA refuses ``refused.example.com`` for good (day 100);
* the store refuses writes for an hour (day 150);
* the monitor restarts (day 180; a new monitor on the same store must not repeat alerts);
* the clock jumps forward 3 days (day 200).

Checked every simulated minute (selection is a pure function of the table, the
certificates and the time, and validity changes only at a certificate's bounds, so the
check re-runs whenever the table or registry changed or a served certificate's not-after
passed, which is the same as running it each minute): no name gets the fallback while a
valid certificate for it exists, nor when its issuer had been reachable for the last third
of the expired certificate's lifetime; every fault shows in health, ``/metrics``, a webhook
and a mail within one simulated minute; no alert is sent twice (idempotency keys unique
across webhook and mail, and across the restart).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import trustme
from OpenSSL import crypto
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.web.client import Agent, HTTPConnectionPool

from aegis import events
from aegis.monitor.mail import MailChannel, MailSettings
from aegis.monitor.webhook import WebhookChannel
from aegis.testing.alerts import SMTPReceiver, WebhookReceiver
from aegis.tls.selection import STEP_FALLBACK
from tests.year_rig import DAY, TOKEN, Planned, Rig, at

SECRET = "year-webhook-secret"
MAIL_PASSWORD = "year-mail-password"
MINUTE = 60.0
WATCHED_SERIES = ("aegis_issuance_failures_total", "aegis_store_writable",
                  "aegis_clock_jumps_total")
FOREVER = float("inf")


@dataclass
class Outage:
    start: float
    end: float
    names: frozenset[str] | None  # None: every name of its scope
    scope: str  # "acme", "origin", "all"

    def covers(self, name: str, scope: str, start: float, end: float) -> bool:
        if self.scope not in ("all", scope):
            return False
        if self.names is not None and name not in self.names:
            return False
        return self.start < end and start < self.end


@dataclass
class Pending:
    """A fault that must show everywhere by ``deadline``."""

    what: str
    deadline: float
    check: Any
    seen: set[str] = field(default_factory=set)


class Year:
    def __init__(self, rig: Rig, webhook: WebhookReceiver, mail: SMTPReceiver) -> None:
        self.rig, self.webhook, self.mail = rig, webhook, mail
        self.client = StubTreq(rig.api.resource())
        self.outages: list[Outage] = []
        self.pending: list[Pending] = []
        self.failures_seen: Counter[tuple[str, str]] = Counter()
        self.last_served: dict[str, Any] = {}
        self.worst: dict[str, float] = {}
        self.violations: list[str] = []
        self.fallback_minutes: Counter[str] = Counter()
        self.fallback_since: dict[str, float] = {}
        self._generation: Any = None
        self._next_boundary = 0.0
        self.handled_posts = 0
        self.replaced = 0
        self.faults_shown = 0
        self.hooks_seen: list[tuple[str, str]] = []
        self.failures_before_restart: Counter[tuple[str, str]] = Counter()
        self.mails_seen: list[tuple[str, str]] = []
        rig.publisher.subscribe(self._on_event)

    # -- reading Aegis as a user would ---------------------------------------------------

    def get(self, path: str, token: bool = True) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        d = self.client.get("https://127.0.0.1:9443" + path, headers=headers)
        self.client.flush()
        box: list[Any] = []
        d.addBoth(box.append)
        response = box[0]
        body: list[Any] = []
        self.client.content(response).addBoth(body.append)
        self.client.flush()
        return response.code, body[0]

    def health(self) -> dict[str, Any]:
        _code, body = self.get("/api/v1/health", token=False)
        return json.loads(body)

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """The samples of the series the faults show in. Read each minute a fault is
        pending, so only those lines are split here (prometheus_client's parser reads the
        whole document at the end of the year, and in tests/test_monitor_process.py)."""
        code, body = self.get("/metrics")
        assert code == 200
        found = []
        for line in body.decode().splitlines():
            if line.startswith(WATCHED_SERIES):
                name, _, rest = line.partition("{")
                labels_text, _, value = rest.rpartition("} ") if rest else ("", "", "")
                if not rest:
                    name, _, value = line.partition(" ")
                labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
                found.append((name, labels, float(value)))
        return found

    @staticmethod
    def metric(samples: list[Any], name: str, **labels: str) -> float:
        return sum(value for metric, have, value in samples if metric == name
                   and all(have.get(k) == v for k, v in labels.items()))

    def alerts_received(self, kind: str, subject: str | None = None) -> tuple[int, int]:
        """How many alerts of ``kind`` (for ``subject``) came by webhook and by mail."""
        for post in self.webhook.received[len(self.hooks_seen):]:
            alert = post.json()
            self.hooks_seen.append((alert["kind"], alert["subject"]))
        for _o, _r, mail in self.mail.messages[len(self.mails_seen):]:
            found = re.search(r"^subject: (.*)$", mail.get_content(), re.MULTILINE)
            self.mails_seen.append((mail["X-Aegis-Event"], found[1] if found else ""))
        hook_n = sum(1 for k, s in self.hooks_seen if k == kind and subject in (None, s))
        mail_n = sum(1 for k, s in self.mails_seen if k == kind and subject in (None, s))
        return hook_n, mail_n

    # -- faults ------------------------------------------------------------------------------

    def _on_event(self, event: events.Event) -> None:
        if event.name != events.CERT_FAILED:
            return
        fields = event.fields
        key = (str(fields["source"]), str(fields["reason"]))
        self.failures_seen[key] += 1
        # the metric counts since the (last) process start
        count = self.failures_seen[key] - self.failures_before_restart[key]
        name, reason = str(fields["name"]), key[1]
        first = int(fields["failures"]) == 1

        def check(body: dict[str, Any], samples: list[Any]) -> bool:
            ok = body["certificates"]["failing"] >= 1 and body["last_renewal_error"] is not None
            ok = ok and self.metric(samples, "aegis_issuance_failures_total", source=key[0],
                                    reason=reason) >= count
            if first:  # a new failure streak: its alert, by webhook and by mail
                hooks, mails = self.alerts_received("renewal_failed", name)
                ok = ok and hooks >= 1 and mails >= 1
            return ok

        self.pending.append(Pending(f"renewal failure of {name} ({reason})",
                                    event.at.timestamp() + MINUTE, check))

    def store_full(self, start: float, hours: float = 1) -> None:
        self.outages.append(Outage(start, start + hours * 3600, None, "all"))

        def check(body: dict[str, Any], samples: list[Any]) -> bool:
            hooks, mails = self.alerts_received("store_failing")
            return ("store_read_only" in body["problems"] and hooks >= 1 and mails >= 1
                    and self.metric(samples, "aegis_store_writable") == 0)

        self.pending.append(Pending("store full", start + MINUTE, check))

    def clock_jumped(self, start: float, seconds: float) -> None:
        self.outages.append(Outage(start, start + seconds, None, "all"))

        def check(body: dict[str, Any], samples: list[Any]) -> bool:
            hooks, mails = self.alerts_received("clock_jumped")
            return (body["last_clock_jump"] is not None and hooks >= 1
                    and mails >= 1 and self.metric(samples, "aegis_clock_jumps_total") >= 1)

        self.pending.append(Pending("clock jump", start + seconds + MINUTE, check))

    def check_pending(self, now: float) -> None:
        """Health and /metrics read once (as a scraper would each minute) for every fault
        still to show."""
        body, samples = self.health(), self.metrics()
        for pending in list(self.pending):
            if pending.check(body, samples):
                self.pending.remove(pending)
                self.faults_shown += 1
            elif now >= pending.deadline:
                self.violations.append(f"{pending.what} not shown within a minute")
                self.pending.remove(pending)

    # -- the operator --------------------------------------------------------------------

    def operator(self) -> None:
        """Act on new webhook alerts: replace an attended manual certificate gone critical."""
        by_id = {p.cert_id: p for p in self.rig.population.planned if p.cert_id is not None}
        for post in self.webhook.received[self.handled_posts:]:
            alert = post.json()
            if alert["kind"] != "certificate_critical":
                continue
            planned: Planned | None = by_id.get(alert["details"].get("certificate_id"))
            if planned is not None and planned.attended and not planned.kind.startswith(
                    ("acme", "origin")):
                self.rig.replace_manual(planned)
                self.replaced += 1
        self.handled_posts = len(self.webhook.received)

    # -- the invariant -------------------------------------------------------------------

    def scope(self, planned: Planned) -> str:
        if planned.kind.startswith("acme"):
            return "acme"
        return "origin" if planned.kind == "origin-15y" else "manual"

    def check_selection(self, now: float) -> None:
        rig = self.rig
        table = rig.selection.current()
        generation = (table, table.generation())
        if generation == self._generation and now < self._next_boundary:
            return
        self._generation = generation
        moment = datetime.fromtimestamp(now, UTC)
        boundary = FOREVER
        for planned in rig.population.planned:
            name = planned.name
            chosen = table.select(name, moment)
            previous = self.last_served.get(name)
            if chosen.step != STEP_FALLBACK:
                cert = chosen.certificate
                assert cert.valid_at(moment)
                if previous is not None and previous is not cert:
                    self._note_remaining(planned, previous, now - MINUTE)
                self.last_served[name] = cert
                boundary = min(boundary, cert.not_after.timestamp())
                self._end_fallback(name, now)
                continue
            self.fallback_since.setdefault(name, now)
            valid = rig.registry.snapshot.lookup(name, moment)
            if valid is not None:
                self.violations.append(f"{moment}: {name} got the fallback while "
                                       f"certificate {valid.id} was valid")
            if previous is None:
                continue
            self._note_remaining(planned, previous, now - MINUTE)
            self._excused_or_violation(planned, previous, moment)
            self.last_served.pop(name)
        self._next_boundary = boundary

    def _end_fallback(self, name: str, now: float) -> None:
        since = self.fallback_since.pop(name, None)
        if since is not None:
            self.fallback_minutes[name] += int((now - since) // MINUTE)

    def _note_remaining(self, planned: Planned, cert: Any, last_minute: float) -> None:
        remaining = cert.not_after.timestamp() - last_minute
        self.worst[planned.kind] = min(self.worst.get(planned.kind, FOREVER), remaining)

    def _excused_or_violation(self, planned: Planned, cert: Any, moment: datetime) -> None:
        scope = self.scope(planned)
        if scope == "manual":
            if planned.attended:
                self.violations.append(f"{moment}: attended {planned.name} expired")
            return
        end = cert.not_after.timestamp()
        start = end - (cert.not_after - cert.not_before).total_seconds() / 3
        if not any(o.covers(planned.name, scope, start, end) for o in self.outages):
            self.violations.append(f"{moment}: {planned.name} expired although its issuer "
                                   "was reachable for the last third of its lifetime")

    def finish(self, now: float) -> None:
        moment = datetime.fromtimestamp(now, UTC)
        for planned in self.rig.population.planned:
            cert = self.last_served.get(planned.name)
            if cert is not None:
                self._note_remaining(planned, cert, now)
            self._end_fallback(planned.name, now)
        del moment


def tls_options() -> tuple[CertificateOptions, tuple[Certificate, ...]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, leaf.private_key_pem.bytes())
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, leaf.cert_chain_pems[0].bytes())
    return (CertificateOptions(privateKey=key, certificate=cert),
            (Certificate.loadPEM(ca.cert_pem.bytes()),))


async def settle(dispatcher: Any) -> None:
    """Let the real reactor carry the deliveries in flight (the simulated clock stands
    still meanwhile). One that waits for a retry waits on the simulated clock: stop
    waiting after a real second, and the year goes on (the retry comes a minute later)."""
    pending = [d for d in dispatcher.in_flight if not d.called]
    if not pending:
        return
    done: Deferred[None] = Deferred()

    def release(_: object = None) -> None:
        if not done.called:
            done.callback(None)

    DeferredList(pending).addBoth(release)
    timer = reactor.callLater(1.0, release)
    await done
    if timer.active():
        timer.cancel()


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, str, SMTPReceiver, int, Any]]:
    webhook = WebhookReceiver(SECRET)
    hook_port = webhook.listen(reactor)
    options, roots = tls_options()
    mail = SMTPReceiver(tls=options, user="aegis", password=MAIL_PASSWORD)
    mail_port = mail.listen(reactor)
    yield (webhook, f"http://127.0.0.1:{hook_port.getHost().port}/alerts", mail,
           mail_port.getHost().port, roots)
    pytest_twisted.blockon(hook_port.stopListening())
    pytest_twisted.blockon(mail_port.stopListening())


@pytest.mark.slow
@pytest.mark.timeout(600)  # the CPU budget is asserted below; wall time varies with load
@pytest_twisted.ensureDeferred
async def test_a_simulated_year(tmp_path: Path, receivers: Any) -> None:
    webhook, url, mail, mail_port, roots = receivers
    http = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, True)))

    def channels(clock: Any) -> list[Any]:
        # Network timeouts on the real reactor, like the network; retries (the dispatcher)
        # on the simulated clock.
        return [WebhookChannel(http, reactor, url, SECRET, "webhook 1"),
                MailChannel(reactor, MailSettings(
                    host="localhost", port=mail_port, sender="aegis@example.com",
                    recipients=("ops@example.com",), username="aegis",
                    password=MAIL_PASSWORD, ca_certificates=roots))]

    started, cpu_started = time.monotonic(), time.process_time()
    rig = Rig(tmp_path, [])
    rig.monitoring.monitor.dispatcher.channels[:] = channels(rig.clock)
    year = Year(rig, webhook, mail)
    rig.start()
    faults = {
        round(at(28) / MINUTE): lambda: setattr(rig.origin, "http_5xx_until", at(33)),
        round(at(60) / MINUTE): lambda: rig.acme.down_until(at(65)),
        round(at(100) / MINUTE): lambda: rig.acme.fail_for("refused.example.com",
                                                           "the CA refuses this name"),
        round(at(150.5) / MINUTE): lambda: setattr(rig.store, "full", True),
        round((at(150.5) + 3600) / MINUTE): lambda: setattr(rig.store, "full", False),
    }
    year.outages += [Outage(at(28), at(33), None, "origin"), Outage(at(60), at(65), None, "acme"),
                     Outage(at(100), FOREVER, frozenset({"refused.example.com"}), "acme")]
    restart_minute, jump_minute = round(at(180) / MINUTE), round(at(200) / MINUTE)
    end = at(float(__import__("os").environ.get("YEAR_DAYS", "365")))
    dispatcher = rig.monitoring.monitor.dispatcher
    while rig.clock.seconds() < end:
        minute = round(rig.clock.seconds() / MINUTE)
        if minute in faults:
            faults.pop(minute)()
            if minute == round(at(150.5) / MINUTE):
                year.store_full(rig.clock.seconds())
        if minute == restart_minute:
            year.failures_before_restart = Counter(year.failures_seen)
            rig.restart_monitor(channels(rig.clock))
            dispatcher = rig.monitoring.monitor.dispatcher
        if minute == jump_minute:
            year.clock_jumped(rig.clock.seconds(), 3 * DAY)
            rig.clock.advance(3 * DAY)
            if dispatcher.in_flight:
                await settle(dispatcher)
        rig.clock.advance(MINUTE)
        if dispatcher.in_flight:
            await settle(dispatcher)
        if year.pending:
            year.check_pending(rig.clock.seconds())
        if len(webhook.received) > year.handled_posts:
            year.operator()
            if dispatcher.in_flight:
                await settle(dispatcher)
        year.check_selection(rig.clock.seconds())
    year.finish(rig.clock.seconds())
    rig.stop()
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started

    _code, final = year.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(final.decode())}
    assert families["aegis_certificate_expiration_timestamp_seconds"].samples
    # counters restart with the process (the monitor restarted on day 180)
    assert 0 < sum(s.value for s in families["aegis_alerts"].samples) <= len(webhook.received)
    hooks = [p.json() for p in webhook.received]
    keys = [a["id"] for a in hooks]
    mail_keys = [m["Idempotency-Key"] for _o, _r, m in mail.messages]
    by_kind = Counter(a["kind"] for a in hooks)
    print(f"\n== the simulated year ({elapsed:.1f} s, {cpu:.1f} s of CPU) ==")
    print(f"certificates issued by the fake CA: {rig.acme.issued} ACME, "
          f"{rig.origin.issued} origin; manual replaced by the operator: {year.replaced}")
    print("alerts by kind:", dict(sorted(by_kind.items())))
    print("worst remaining lifetime seen while served (hours):",
          {k: round(v / 3600, 1) for k, v in sorted(year.worst.items())})
    print("fallback minutes by name:", dict(year.fallback_minutes.most_common(8)))
    print("failed attempts by (source, reason):", dict(year.failures_seen))
    print(f"faults shown in health, metrics, webhook and mail in time: {year.faults_shown}")
    print("channels:", {label: (sum(st.delivered.values()), st.attempts_failed, st.last_error)
                        for label, st in dispatcher.stats.items()})
    assert not year.violations, year.violations[:10]
    assert not year.pending
    assert len(keys) == len(set(keys)), "an alert was sent twice"
    assert sorted(mail_keys) == sorted(keys)  # every alert by mail too, once
    assert all(p.signature_ok for p in webhook.received)
    assert all(not stats.failed for stats in dispatcher.stats.values())
    for kind in ("certificate_warning", "certificate_critical", "certificate_expired",
                 "renewal_failed", "renewal_recovered", "store_failing", "store_recovered",
                 "clock_jumped"):
        assert by_kind[kind] >= 1, kind
    assert year.fallback_minutes["refused.example.com"] > 0  # refused for good: expired
    assert year.replaced >= 10
    assert cpu < 120  # CPU time: wall time also counts other work on a shared machine
