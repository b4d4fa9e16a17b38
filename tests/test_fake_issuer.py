"""The fake issuer's scripting, on a ``Clock`` (the contract itself: tests/issuer_contract.py),
and the engine reacting to it: in-flight states, a CA that is down until a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from aegis.certs.lifecycle import LifecycleEngine
from aegis.certs.sources import AUTOCERT, SourceSpec, register, unregister
from aegis.crypto.keys import build_csr, generate_private_key
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.store.memory import MemoryStore
from aegis.store.records import HostFields
from aegis.testing.issuer import FakeIssuer, IssuerFailure

START = datetime(2026, 5, 1, tzinfo=UTC)


def _clock() -> Clock:
    clock = Clock()
    clock.advance(START.timestamp())
    return clock


def _csr(names: list[str]) -> bytes:
    return build_csr(generate_private_key("ecdsa-p256"), names)


def _result(deferred: Deferred[object]) -> object:
    found: list[object] = []
    deferred.addBoth(found.append)
    assert found, "the fake answered later than expected"
    if isinstance(found[0], Failure):
        found[0].raiseException()
    return found[0]


def test_lifetime_and_time_come_from_the_clock() -> None:
    clock = _clock()
    issuer = FakeIssuer(clock, lifetime=timedelta(days=6))
    chain = x509.load_pem_x509_certificates(
        _result(issuer.issue(_csr(["a.test"]), ["a.test"])))  # type: ignore[arg-type]
    assert chain[0].not_valid_before_utc == START
    assert chain[0].not_valid_after_utc == START + timedelta(days=6)
    chain[1].verify_directly_issued_by(issuer.ca.root)
    assert (issuer.issue_calls, issuer.issued) == (1, 1)


def test_fail_next_fail_for_and_heal() -> None:
    issuer = FakeIssuer(_clock())
    issuer.fail_next(2, "busy", retry_at=123.0)
    for _ in range(2):
        with pytest.raises(IssuerFailure, match="busy") as info:
            _result(issuer.issue(_csr(["a.test"]), ["a.test"]))
        assert info.value.retry_at == 123.0
    _result(issuer.issue(_csr(["a.test"]), ["a.test"]))
    issuer.fail_for("b.test")
    for _ in range(3):
        with pytest.raises(IssuerFailure, match=r"b\.test"):
            _result(issuer.issue(_csr(["a.test", "b.test"]), ["a.test", "b.test"]))
    issuer.heal("b.test")
    _result(issuer.issue(_csr(["b.test"]), ["b.test"]))
    assert (issuer.issue_calls, issuer.issued) == (7, 2)


def test_down_until_a_time() -> None:
    clock = _clock()
    issuer = FakeIssuer(clock)
    issuer.down_until(clock.seconds() + 300)
    with pytest.raises(IssuerFailure) as info:
        _result(issuer.issue(_csr(["a.test"]), ["a.test"]))
    assert info.value.retry_at == clock.seconds() + 300
    clock.advance(300)
    _result(issuer.issue(_csr(["a.test"]), ["a.test"]))


def test_csr_names_must_be_the_names_asked_for() -> None:
    issuer = FakeIssuer(_clock())
    with pytest.raises(IssuerFailure, match="names differ"):
        _result(issuer.issue(_csr(["a.test"]), ["b.test"]))


def test_delay_answers_on_the_clock_and_cancels() -> None:
    clock = _clock()
    issuer = FakeIssuer(clock, delay=5.0)
    answer = issuer.issue(_csr(["a.test"]), ["a.test"])
    assert not answer.called and issuer.in_flight == 1
    clock.advance(5)
    assert answer.called and issuer.in_flight == 0
    cancelled = issuer.issue(_csr(["a.test"]), ["a.test"])
    cancelled.cancel()
    with pytest.raises(CancelledError):
        _result(cancelled)
    clock.advance(10)
    assert issuer.issued == 1 and issuer.in_flight == 0


def test_window_and_abandon_counts() -> None:
    issuer = FakeIssuer(_clock(), window=lambda nb, na: (na - timedelta(days=2), na))
    end = START + timedelta(days=6)
    assert issuer.renewal_window(START, end) == (end - timedelta(days=2), end)
    _result(issuer.abandon(["a.test"]))
    _result(issuer.abandon(["a.test"]))
    assert issuer.abandon_calls == 2 and issuer.abandoned == [("a.test",), ("a.test",)]


@pytest.fixture
def fake_source() -> Iterator[SourceSpec]:
    spec = register(SourceSpec(name="fake", label="Fake CA", selection_step=AUTOCERT,
                               host_mode="fake-ca", renews_itself=True,
                               issuer=lambda context: None))
    yield spec
    unregister("fake")


def _engine(clock: Clock, issuer: FakeIssuer) -> tuple[LifecycleEngine, MemoryStore]:
    store = MemoryStore(now=lambda: datetime.fromtimestamp(clock.seconds(), UTC))
    store.transact_blocking(lambda txn: txn.add_host(HostFields(
        domain="a.test", upstream="http://127.0.0.1:1", ssl_mode="fake-ca")))
    engine = LifecycleEngine(clock, store, KeyWrapper(MasterKey.generate()),
                             {"fake": issuer}, reload=lambda: None, jitter=lambda: 0.5)
    return engine, store


def test_engine_shows_the_attempt_in_flight(fake_source: SourceSpec) -> None:
    clock = _clock()
    issuer = FakeIssuer(clock, delay=30.0)
    engine, _store = _engine(clock, issuer)
    engine.startService()
    clock.advance(0)
    assert engine.in_flight("a.test") and engine.state("a.test").status == "obtaining"  # type: ignore[union-attr]
    clock.advance(30)
    assert not engine.in_flight("a.test") and engine.state("a.test").status == "valid"  # type: ignore[union-attr]
    engine.stopService()


def test_engine_waits_while_the_ca_is_down(fake_source: SourceSpec) -> None:
    clock = _clock()
    issuer = FakeIssuer(clock)
    issuer.down_until(clock.seconds() + 1800)
    engine, _store = _engine(clock, issuer)
    engine.startService()
    clock.advance(0)
    state = engine.state("a.test")
    assert state is not None and state.status == "failed"
    assert state.next_attempt_at == START + timedelta(seconds=1800)  # the CA's time, not 60 s
    clock.pump([60.0] * 29)
    assert issuer.issue_calls == 1
    clock.pump([60.0] * 2)
    assert issuer.issue_calls == 2 and engine.state("a.test").status == "valid"  # type: ignore[union-attr]
    engine.stopService()
