"""The lifecycle engine's states and the ACME faults of issue 14, on a Clock.

The CA is the in-memory fake of ``tests/test_acme_fakeca.py`` behind the real ACME issuer
and transport (StubTreq), so every request is counted and time only moves when the test
moves it. Faults 1-7 of the issue each have a test here (the API side of 1, 6, 8 and 9 is
tested through the admin API elsewhere).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from aegis.certs.lifecycle import RequestBudget
from aegis.certs.lifecycle.budget import FAILURES_PER_WINDOW, FailureBudget
from aegis.certs.lifecycle.issuers import IssuerContext
from aegis.events import EventPublisher
from tests.helpers import certificate_fields
from tests.test_acme_fakeca import BASE
from tests.test_acme_manager import World, _names
from tests.test_acme_manager import events as events  # the fixture


def _statuses(events: list[dict[str, Any]], name: str) -> list[str]:
    return [e["event"] for e in events if e.get("name") == name and "event" in e]


def _delete_host(world: World, domain: str) -> None:
    def work(txn: Any) -> None:
        for host in txn.list_hosts():
            if host.domain == domain:
                txn.delete_host(host.id)

    world.rig.store.transact_blocking(work)


def _set_mode(world: World, domain: str, mode: str) -> None:
    def work(txn: Any) -> None:
        for host in txn.list_hosts():
            if host.domain == domain:
                txn.replace_host(host.id, replace(host.fields(), ssl_mode=mode))

    world.rig.store.transact_blocking(work)


def test_every_state_in_order(events: list[dict[str, Any]]) -> None:
    """wanted -> obtaining -> valid -> renewing -> valid -> retired -> valid (back)."""
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.hold = "/finalize"
    engine = world.boot()
    world.settle(1)
    assert engine.state("a.example.com").status == "obtaining"  # type: ignore[union-attr]
    assert engine.in_flight("a.example.com")
    world.rig.ca.hold = None
    world.boot()  # a restart resumes the held order
    engine = world.manager
    assert engine is not None
    world.settle()
    state = engine.state("a.example.com")
    assert state is not None and state.status == "valid" and state.issuer == f"acme {BASE}/dir"
    (first,) = world.certificates()
    assert first.extra["issued_by"] == f"acme {BASE}/dir"
    # renewing: the old certificate keeps serving while the attempt runs
    world.rig.ca.hold = "/finalize"
    assert state.renews_at is not None
    world.rig.clock.advance((state.renews_at - engine.now()).total_seconds() + 1)
    world.settle(1)
    assert engine.state("a.example.com").status == "renewing"  # type: ignore[union-attr]
    assert world.certificates() == [first]
    world.rig.ca.hold = None
    for request in list(world.rig.ca.held):
        request.loseConnection()  # type: ignore[attr-defined]
    world.rig.ca.held.clear()
    world.boot()
    engine = world.manager
    world.settle()
    assert engine.state("a.example.com").status == "valid"  # type: ignore[union-attr]
    (renewed,) = world.certificates()
    assert renewed.id == first.id and renewed.not_after > first.not_after
    # retired: the host leaves letsencrypt; the certificate stays, no longer auto_renew
    _set_mode(world, "a.example.com", "none")
    world.drive(engine.refresh())
    assert engine.state("a.example.com").status == "retired"  # type: ignore[union-attr]
    assert world.certificates()[0].auto_renew is False
    orders = world.rig.ca.orders_created
    world.rig.clock.advance(timedelta(days=120).total_seconds())
    world.settle(2)
    assert world.rig.ca.orders_created == orders  # a retired name is never renewed
    # back: the host returns to letsencrypt and its (now expired) certificate is renewed
    _set_mode(world, "a.example.com", "letsencrypt")
    world.drive(engine.refresh())
    world.settle()
    assert engine.state("a.example.com").status == "valid"  # type: ignore[union-attr]
    assert world.certificates()[0].auto_renew is True
    assert world.rig.ca.orders_created == orders + 1
    seen = _statuses(events, "a.example.com")
    for name in ("cert_wanted", "cert_obtaining", "cert_obtained", "cert_renewing",
                 "cert_renewed", "cert_retired"):
        assert name in seen, (name, seen)


def test_fault_1_a_deleted_certificate_is_ordered_again_at_once() -> None:
    """Deleting the certificate a valid name serves makes that name due now, not at its
    old renewal date (60 days later)."""
    world = World()
    world.add_host("a.example.com")
    engine = world.boot()
    world.settle()
    (first,) = world.certificates()
    world.rig.store.transact_blocking(lambda t: t.delete_certificate(first.id))
    world.drive(engine.refresh())
    world.settle()
    assert world.rig.ca.orders_created == 2
    (again,) = world.certificates()
    assert again.id != first.id
    assert engine.state("a.example.com").certificate_id == again.id  # type: ignore[union-attr]


def test_fault_1_force_reset_starts_a_new_order_at_once() -> None:
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.validate = False
    engine = world.boot()
    world.settle(5)
    assert engine.state("a.example.com").status == "failed"  # type: ignore[union-attr]
    world.rig.ca.validate = True
    orders = world.rig.ca.orders_created
    world.drive(engine.reset_names(["a.example.com"], reason="deleted"))
    world.settle()
    assert world.rig.ca.orders_created == orders + 1
    assert engine.state("a.example.com").status == "valid"  # type: ignore[union-attr]


def test_fault_2_a_new_directory_reissues_every_name_at_once() -> None:
    world = World()
    world.add_host("a.example.com")
    world.add_host("b.example.com")
    world.boot()
    world.settle()
    before = {c.domains: c for c in world.certificates()}
    assert world.rig.ca.orders_created == 2
    engine = world.boot(directory="/dir-other")  # AEGIS_ACME_DIRECTORY changed
    world.settle()
    assert world.rig.ca.orders_created == 4
    for cert in world.certificates():
        assert cert.id == before[cert.domains].id  # replaced in place: bindings follow
        assert cert.fingerprint_sha256 != before[cert.domains].fingerprint_sha256
        assert cert.extra["issued_by"] == f"acme {BASE}/dir-other"
    assert {s.issuer for s in engine.states()} == {f"acme {BASE}/dir-other"}


def test_fault_3_failed_validations_stay_within_the_ca_limit() -> None:
    """Let's Encrypt allows 5 failed authorisations per name per hour; the engine spends at
    most FAILURES_PER_WINDOW (3) and then waits for the oldest to leave the window."""
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.validate = False
    engine = world.boot(start=False)
    orders: list[float] = []
    engine.events.subscribe(
        lambda e: orders.append(e.at.timestamp()) if e.name == "cert_obtaining" else None)
    world.drive(engine.startService())
    for _ in range(4 * 60):  # four hours, a minute at a time
        world.rig.clock.advance(60)
        world.settle(0.5)
    for start in orders:
        in_hour = [t for t in orders if start <= t < start + 3600]
        assert len(in_hour) <= FAILURES_PER_WINDOW, in_hour
    assert len(orders) >= 6  # it kept trying, within the budget
    state = engine.state("a.example.com")
    assert state is not None and state.status == "failed" and state.failures == len(orders)


def test_failure_budget_arithmetic() -> None:
    budget = FailureBudget(limit=3, window=timedelta(hours=1))
    world = World()
    now = world.rig.clock.seconds()
    from datetime import UTC, datetime

    t0 = datetime.fromtimestamp(now, UTC)
    failures = [t0, t0 + timedelta(minutes=1), t0 + timedelta(minutes=3)]
    assert budget.earliest_attempt(failures[:2], t0 + timedelta(minutes=4)) is None
    assert budget.earliest_attempt(failures, t0 + timedelta(minutes=4)) == t0 + timedelta(hours=1)
    assert budget.recent(failures, t0 + timedelta(minutes=61)) == (failures[2],)


def test_fault_4_an_order_in_flight_is_abandoned_with_its_host(
    events: list[dict[str, Any]],
) -> None:
    world = World()
    world.add_host("gone.example.com")
    world.rig.ca.hold = "/finalize"
    engine = world.boot()
    world.settle(1)
    assert engine.in_flight("gone.example.com")
    _delete_host(world, "gone.example.com")
    world.drive(engine.refresh())
    world.settle(1)
    assert not engine.in_flight("gone.example.com")
    state = world.state("gone.example.com")
    assert state.status == "retired" and state.order_url is None
    assert state.pending_key_sealed is None
    assert world.rig.store.transact_blocking(lambda t: t.list_acme_challenges()) == []
    world.rig.ca.hold = None
    world.boot()  # a restart does not resume the abandoned order either
    world.settle()
    assert world.certificates() == []
    assert "cert_abandoned" in _statuses(events, "gone.example.com")


def test_fault_5_many_hosts_at_once_stay_within_the_request_budget() -> None:
    world = World()
    for index in range(30):
        world.add_host(f"h{index}.example.com")
    budget = RequestBudget(world.rig.clock)  # the default: 10 requests/s, bursts of 10
    world.boot(pace=budget.take)
    for _ in range(200):
        world.settle(0.5)
    assert len(world.certificates()) == 30
    times = [t for t, method, path in world.rig.ca.log]
    for start in times:  # a token bucket: at most the burst plus one second's rate
        assert len([t for t in times if start <= t < start + 1.0]) <= 10 + 10
    assert (len(times) - 10) / (times[-1] - times[0]) <= 10.0 + 1e-6
    assert budget.granted == len(times) > 200


def test_issuer_context_shares_one_budget_per_ca() -> None:
    world = World()
    context = IssuerContext(reactor=world.rig.clock, clock=world.rig.clock,
                            store=world.rig.store, wrapper=world.rig.wrapper, settings=None,
                            events=EventPublisher(world.rig.clock))
    assert context.pace("https://ca.example/dir") == context.pace("https://ca.example/dir")
    assert context.pace("https://ca.example/dir") != context.pace("https://other.example/d")


def test_fault_6_retry_now_clears_the_backoff() -> None:
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.validate = False
    engine = world.boot()
    world.settle(5)
    world.rig.clock.advance(61)
    world.settle(5)
    state = engine.state("a.example.com")
    assert state is not None and state.failures == 2 and state.next_attempt_at is not None
    assert state.next_attempt_at > engine.now() + timedelta(seconds=60)
    world.rig.ca.validate = True
    world.drive(engine.retry("a.example.com"))
    world.settle()
    assert engine.state("a.example.com").status == "valid"  # type: ignore[union-attr]


def test_retry_now_keeps_the_failed_validation_budget() -> None:
    """After 3 failed attempts within an hour, "retry now" may not spend a fourth: the
    state says when the next attempt may start instead."""
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.validate = False
    engine = world.boot()
    for _ in range(4):
        world.rig.clock.advance(180)
        world.settle(1)
    assert engine.state("a.example.com").failures == FAILURES_PER_WINDOW  # type: ignore[union-attr]
    attempts = engine.attempts_started
    for _ in range(3):
        world.drive(engine.retry("a.example.com"))
        world.settle(1)
    assert engine.attempts_started == attempts
    state = engine.state("a.example.com")
    assert state is not None and state.status == "failed"
    assert state.next_attempt_at is not None and state.next_attempt_at > engine.now()


def test_fault_7_a_name_an_upload_covers_gets_no_order_until_it_nears_expiry() -> None:
    world = World()
    now = world.rig.clock.seconds()
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(now, UTC) - timedelta(days=1)
    uploaded = replace(certificate_fields(("*.example.com",)), not_before=start,
                       not_after=start + timedelta(days=30))
    world.rig.store.transact_blocking(lambda t: t.add_certificate(uploaded))
    world.add_host("a.example.com")
    engine = world.boot()
    world.settle()
    assert world.rig.ca.orders_created == 0
    assert "a.example.com" not in engine.demanded()
    # a week before the upload expires the name is wanted, so a certificate is ready
    world.rig.clock.advance(timedelta(days=23).total_seconds())
    world.settle(2)
    world.rig.clock.advance(engine._check_interval + 1)
    world.settle(5)
    assert world.rig.ca.orders_created == 1
    assert "a.example.com" in engine.demanded()


def test_names_seen_in_events_carry_no_secrets(events: list[dict[str, Any]]) -> None:
    world = World()
    world.add_host("a.example.com")
    world.boot()
    world.settle()
    assert ("cert_obtained", "a.example.com") in _names(events)
    assert all("PRIVATE" not in repr(e) for e in events)
