"""The lifecycle engine with the ACME issuer against the in-memory fake CA, time on a Clock.

Covers the host policy, one order per name, restart safety (after issuance, mid-order,
after rateLimited), backoff while the old certificate serves, renewal by moving the clock,
the per-name state and the named events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from aegis.certs.lifecycle import RETRY_INTERVALS, LifecycleEngine, lifetime_renewal_time
from aegis.crypto.keys import load_private_key_pem, public_keys_equal
from aegis.crypto.sealed import certificate_key_context
from aegis.interfaces import IOnDemandIssuance
from aegis.sources.acme import SOURCE
from aegis.sources.acme._client import AcmeClient
from aegis.sources.acme._journal import StoreOrderJournal
from aegis.sources.acme._transport import AcmeTransport, RetryPolicy
from aegis.sources.acme.account import StoreAccountBook, load_or_create_account_key
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.sources.acme.issuer import AcmeIssuer
from aegis.store._runner import immediate_runner
from aegis.store.records import HostFields
from aegis.store.sqlite import SQLiteStore
from tests.test_acme_fakeca import BASE, Rig, Scripted, drive, make_rig


class World:
    """One fake CA and store; ``boot()`` makes a fresh process's worth of objects."""

    def __init__(self, key_kind: str = "ecdsa-p256") -> None:
        self.rig: Rig = make_rig(RetryPolicy(transient_attempts=2, backoff_base=1.0))
        self.reloads = 0
        self.key_kind = key_kind
        self.manager: LifecycleEngine | None = None
        self.issuer: AcmeIssuer | None = None
        self.profile_for: Any = None  # AcmeIssuer's profile lookup, when a test sets one

    def add_host(
        self, domain: str, mode: str = "letsencrypt", aliases: tuple[str, ...] = ()
    ) -> None:
        fields = HostFields(
            domain=domain, aliases=aliases, upstream="http://127.0.0.1:1", ssl_mode=mode
        )
        self.rig.store.transact_blocking(lambda t: t.add_host(fields))

    def _reload(self) -> None:
        self.reloads += 1

    def boot(self, start: bool = True, directory: str = "/dir",
             pace: Any = None) -> LifecycleEngine:
        rig = self.rig
        if self.manager is not None and self.manager.running:
            drive(rig, self.manager.stopService())
        key = rig.store.transact_blocking(lambda t: load_or_create_account_key(t, rig.wrapper))
        transport = AcmeTransport(
            rig.clock, rig.stub, key, RetryPolicy(transient_attempts=2), rig.clock.seconds,
            pace,
        )
        client = AcmeClient(transport, key, BASE + directory, "", StoreAccountBook(rig.store))
        responder = ChallengeResponder(
            rig.store, lambda: datetime.fromtimestamp(rig.clock.seconds(), UTC))
        rig.ca.responder = responder
        issuer = AcmeIssuer(rig.clock, client, responder, StoreOrderJournal(rig.store),
                            key_kind=self.key_kind,  # type: ignore[arg-type]
                            profile_for=self.profile_for)
        self.issuer = issuer
        self.manager = LifecycleEngine(
            rig.clock,
            rig.store,
            rig.wrapper,
            {SOURCE: issuer},
            self._reload,
            jitter=lambda: 0.5,
            preload=[responder.load],
        )
        if start:
            drive(rig, self.manager.startService())
        return self.manager

    def drive(self, d: Any) -> Any:
        return drive(self.rig, d)

    def settle(self, seconds: float = 5.0) -> None:
        """Let in-flight work finish (pump HTTP, move the clock a little)."""
        waited = 0.0
        while waited < seconds:
            self.rig.stub.flush()
            self.rig.clock.advance(0.05)
            waited += 0.05
        self.rig.stub.flush()

    def certificates(self) -> list[Any]:
        return self.rig.store.transact_blocking(lambda t: t.list_certificates())  # type: ignore[no-any-return]

    def state(self, name: str) -> Any:
        return self.rig.store.transact_blocking(lambda t: t.get_issuance_state(name))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def _names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["event"], e.get("name", "")) for e in events if "event" in e]


def test_provides_on_demand_interface() -> None:
    world = World()
    assert verifyObject(IOnDemandIssuance, world.boot(start=False))


def test_hosts_get_certificates_at_start(events: list[dict[str, Any]]) -> None:
    world = World()
    world.add_host("a.example.com", aliases=("www.a.example.com",))
    world.add_host("plain.example.com", mode="none")
    world.boot()
    world.settle()
    certs = world.certificates()
    assert sorted(c.domains for c in certs) == [("a.example.com",), ("www.a.example.com",)]
    for cert in certs:
        assert cert.source == "letsencrypt" and cert.auto_renew is True
        assert cert.key_type == "ecdsa-p256"
        key = load_private_key_pem(
            world.rig.wrapper.open(cert.key_sealed, certificate_key_context(cert.uid))
        )
        leaf = x509.load_pem_x509_certificates(cert.chain_pem.encode())[0]
        assert public_keys_equal(key.public_key(), leaf.public_key())
    state = world.state("a.example.com")
    assert state.status == "valid" and state.certificate_id in {c.id for c in certs}
    assert state.renews_at == lifetime_renewal_time(certs[0].not_before, certs[0].not_after) or (
        abs(
            (
                state.renews_at - lifetime_renewal_time(certs[0].not_before, certs[0].not_after)
            ).total_seconds()
        )
        <= 1
    )
    assert state.pending_key_sealed is None and state.order_url is None
    assert world.reloads == 2
    assert ("cert_obtaining", "a.example.com") in _names(events)
    assert ("cert_obtained", "a.example.com") in _names(events)
    assert all("PRIVATE" not in repr(e) for e in events)


def test_policy_unknown_names_never_ordered() -> None:
    world = World()
    world.add_host("plain.example.com", mode="none")
    manager = world.boot()
    manager.certificate_wanted("unknown.example.com")
    manager.certificate_wanted("plain.example.com")
    manager.certificate_wanted("bad name;rm -rf /")
    manager.certificate_wanted("\x00")
    world.settle()
    assert world.rig.ca.orders_created == 0
    assert world.certificates() == []


def test_one_order_per_name_under_twenty_requests() -> None:
    world = World()
    manager = world.boot()
    world.add_host("busy.example.com")
    drive(world.rig, manager.refresh())
    for _ in range(20):
        manager.certificate_wanted("BUSY.example.com.")
        manager.obtain("busy.example.com", force=True)
    world.settle()
    assert world.rig.ca.orders_created == 1
    assert len(world.certificates()) == 1


def test_restart_after_issuance_orders_nothing() -> None:
    world = World()
    world.add_host("a.example.com")
    world.boot()
    world.settle()
    assert world.rig.ca.orders_created == 1
    manager = world.boot()
    manager.certificate_wanted("a.example.com")
    world.settle()
    assert world.rig.ca.orders_created == 1
    assert len(world.certificates()) == 1


def test_restart_mid_order_resumes_the_same_order() -> None:
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.hold = "/finalize"
    world.boot()
    world.settle()
    assert world.rig.ca.held, "the order should be waiting at finalize"
    state = world.state("a.example.com")
    assert state.status == "obtaining" and state.order_url and state.pending_key_sealed
    world.rig.ca.hold = None
    world.boot()  # stops the old manager (cancelling its order) and starts a new one
    world.settle()
    assert world.rig.ca.orders_created == 1
    assert world.state("a.example.com").status == "valid"
    assert len(world.certificates()) == 1


def test_failures_back_off_while_old_certificate_serves(events: list[dict[str, Any]]) -> None:
    world = World()
    world.add_host("a.example.com")
    manager = world.boot()
    world.settle()
    (first,) = world.certificates()
    state = world.state("a.example.com")
    # Into the renewal window, with the CA down.
    world.rig.ca.script += [Scripted("/", 500) for _ in range(1000)]
    world.rig.clock.advance((state.renews_at - manager.now()).total_seconds() + 1)
    world.settle(5)
    failed = world.state("a.example.com")
    assert failed.status == "failed" and failed.failures == 1
    assert "HTTP 500" in failed.last_error
    assert failed.certificate_id == first.id
    gap = (failed.next_attempt_at - failed.last_attempt_at).total_seconds()
    assert RETRY_INTERVALS[0] <= gap <= RETRY_INTERVALS[0] + 10
    assert world.certificates() == [first]  # the old pair is untouched and keeps serving
    assert manager.state("a.example.com") == failed
    # Nothing happens before next_attempt_at ...
    requests = len(world.rig.ca.log)
    world.rig.clock.advance(RETRY_INTERVALS[0] - 10)
    world.rig.stub.flush()
    assert len(world.rig.ca.log) == requests
    # ... then a second failure, with a longer wait.
    world.rig.clock.advance(15)
    world.settle(5)
    second = world.state("a.example.com")
    assert second.failures == 2
    assert (second.next_attempt_at - second.last_attempt_at).total_seconds() >= RETRY_INTERVALS[1]
    # The CA comes back: renewed in place, same id, new certificate.
    world.rig.ca.script.clear()
    world.rig.clock.advance(RETRY_INTERVALS[1] + 1)
    world.settle(5)
    (renewed,) = world.certificates()
    assert renewed.id == first.id and renewed.fingerprint_sha256 != first.fingerprint_sha256
    assert world.state("a.example.com").status == "valid"
    assert world.state("a.example.com").failures == 0
    assert ("cert_failed", "a.example.com") in _names(events)
    assert ("cert_renewed", "a.example.com") in _names(events)


def test_renewal_by_moving_the_clock() -> None:
    world = World()
    world.add_host("a.example.com")
    manager = world.boot()
    world.settle()
    (first,) = world.certificates()
    # Ten days before the window: nothing.
    world.rig.clock.advance(
        (world.state("a.example.com").renews_at - manager.now()).total_seconds()
        - timedelta(days=10).total_seconds()
    )
    world.settle(2)
    assert world.rig.ca.orders_created == 1
    world.rig.clock.advance(timedelta(days=10, seconds=700).total_seconds())
    world.settle(2)
    assert world.rig.ca.orders_created == 2
    (renewed,) = world.certificates()
    assert renewed.id == first.id and renewed.not_after > first.not_after
    assert world.reloads == 2


def test_rate_limit_respected_across_restart() -> None:
    world = World()
    world.add_host("a.example.com")
    world.rig.ca.script.append(Scripted("/order", 429, "rateLimited", {"Retry-After": "7200"}))
    world.boot()
    world.settle()
    state = world.state("a.example.com")
    assert state.status == "failed" and "rate" in state.last_error.lower()
    assert (state.next_attempt_at - state.last_attempt_at).total_seconds() >= 7200
    orders_asked = len(world.rig.ca.requests("/order"))
    manager = world.boot()  # a new process: the transport's gate is gone, the state is not
    manager.certificate_wanted("a.example.com")
    world.rig.clock.advance(3600)
    world.settle(5)
    assert len(world.rig.ca.requests("/order")) == orders_asked
    world.rig.clock.advance(3600 + 700)
    world.settle(5)
    assert world.state("a.example.com").status == "valid"


def test_rsa_key_option() -> None:
    world = World(key_kind="rsa-2048")
    world.add_host("a.example.com")
    world.boot()
    world.settle()
    assert [c.key_type for c in world.certificates()] == ["rsa-2048"]


def test_host_created_later_is_ordered_without_a_handshake() -> None:
    world = World()
    manager = world.boot()
    world.add_host("late.example.com")
    drive(world.rig, manager.refresh())
    world.settle()
    assert [c.domains for c in world.certificates()] == [("late.example.com",)]


@pytest.mark.timeout(30)  # the bug this guards against is a tight retry loop: a hang
def test_a_store_that_cannot_record_the_attempt_backs_off_in_memory(tmp_path: Path) -> None:
    """ACCEPTANCE 34 for renewals: when the store cannot record an attempt (a full disk, a
    failing one), the failure and its backoff live in memory, so the schedule waits as it
    would have instead of retrying in a tight loop."""
    world = World()
    world.rig = replace(world.rig, store=SQLiteStore.open(tmp_path / "aegis.db",
                                                          immediate_runner))
    world.add_host("full.example.com")
    manager = world.boot(start=False)
    # Fault injection inside SQLite itself: every write of an issuance state fails.
    def break_writes(txn: Any) -> None:
        for verb in ("INSERT", "UPDATE"):
            txn._db.execute(f"CREATE TRIGGER no_{verb} BEFORE {verb} ON issuance_state "
                            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")

    world.rig.store.transact_blocking(break_writes)
    drive(world.rig, manager.startService())
    world.settle(2.0)
    state = manager.state("full.example.com")
    assert state is not None and state.status == "failed", state
    assert state.last_error is not None and "database" in state.last_error
    assert state.next_attempt_at is not None and state.failures == 1
    world.settle(30.0)  # within the first retry interval (60 s): nothing more happens
    assert manager.state("full.example.com") == state
    assert manager.attempts_started == 0 and world.certificates() == []
    drive(world.rig, manager.stopService())
    world.rig.store.close()
