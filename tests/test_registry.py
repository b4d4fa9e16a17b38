"""The in-memory certificate registry: selection, wildcards, corrupted keys, events, reloads.

ACCEPTANCE items 6, 8, 16 (registry part) and 37; runs against the SQLite and memory stores.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

import aegis.certs.registry as registry_module
from aegis.certs.registry import CertificateRegistry
from aegis.certs.validate import validate_upload
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.names import normalise_sni
from aegis.store._runner import immediate_runner
from aegis.store.memory import MemoryStore
from aegis.store.records import CertificateFields
from aegis.store.sqlite import SQLiteStore
from aegis.threads import reactor_pool_runner
from aegis.tls.selection import CertificateLookup
from tests.test_certs_helpers import NOW, build_leaf, key_pem, pem

WRAPPER = KeyWrapper(MasterKey.generate())


def fields_for(
    names: tuple[str, ...], not_before: datetime, not_after: datetime
) -> CertificateFields:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(key, names, not_before=not_before, not_after=not_after)
    validated = validate_upload(pem(cert), key_pem(key), now=not_before)
    return validated.to_fields(WRAPPER)


def current(*names: str, days: int = 90) -> CertificateFields:
    return fields_for(names, NOW - timedelta(days=1), NOW + timedelta(days=days))


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        opened: Any = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    else:
        opened = MemoryStore()
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(NOW.timestamp())
    return clock


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """The registry's log events, as the global log publisher delivers them."""
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == registry_module.__name__:
            seen.append(event)
            assert "PRIVATE KEY" not in formatEvent(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def add(store: Any, fields: CertificateFields) -> int:
    return int(store.transact_blocking(lambda t: t.add_certificate(fields)).id)


def test_exact_and_wildcard_lookup(store: Any, clock: Clock) -> None:
    app = add(store, current("app.example.com"))
    wild = add(store, current("*.example.com"))
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()

    def chosen(name: str) -> int | None:
        found = registry.lookup(name)
        return found.id if found else None

    assert chosen("app.example.com") == app
    assert chosen("other.example.com") == wild
    assert chosen("example.com") is None
    assert chosen("a.b.example.com") is None
    assert chosen(normalise_sni(b"APP.EXAMPLE.COM.") or "") == app
    assert chosen(normalise_sni(b"Other.Example.Com") or "") == wild
    assert registry.by_id(app) is registry.lookup("app.example.com")
    assert registry.by_id(999) is None
    loaded = registry.by_id(app)
    assert loaded is not None and "key" not in repr(loaded).replace("public_key", "")


def test_lookup_never_raises(store: Any, clock: Clock) -> None:
    add(store, current("app.example.com"))
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    for bad in (None, "", ".", 42, b"app.example.com", "x" * 10_000):
        assert registry.lookup(bad) is None  # type: ignore[arg-type]
    assert registry.lookup("app.example.com", now="not a time") is None  # type: ignore[arg-type]
    assert registry.by_id("1") is None  # type: ignore[arg-type]


def test_selection_prefers_valid_then_latest_expiry(store: Any, clock: Clock) -> None:
    short = add(store, current("app.example.com", days=10))
    long = add(store, current("app.example.com", days=60))
    future = add(
        store,
        fields_for(("app.example.com",), NOW + timedelta(days=5), NOW + timedelta(days=400)),
    )
    expired = add(
        store,
        fields_for(("app.example.com",), NOW - timedelta(days=90), NOW - timedelta(days=1)),
    )
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    picked = registry.lookup("app.example.com")
    assert picked is not None and picked.id == long
    # Sixty-one days on: both current ones expired, the once-future one is valid.
    clock.advance(timedelta(days=61).total_seconds())
    picked = registry.lookup("app.example.com")
    assert picked is not None and picked.id == future
    # Nothing valid at all: nothing is offered (the TLS layer falls back).
    assert registry.lookup("app.example.com", NOW + timedelta(days=1000)) is None
    assert registry.lookup("app.example.com", NOW - timedelta(days=1000)) is None
    assert {short, expired} <= set(registry.snapshot.by_id)


def test_sources_filter(store: Any, clock: Clock) -> None:
    custom = add(store, current("app.example.com", days=10))
    acme = dataclasses.replace(current("app.example.com", days=80), source="letsencrypt")
    issued = add(store, acme)
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    found = registry.lookup("app.example.com", sources=frozenset({"custom"}))
    assert found is not None and found.id == custom
    found = registry.lookup("app.example.com", sources=frozenset({"letsencrypt"}))
    assert found is not None and found.id == issued
    assert registry.lookup("app.example.com", sources=frozenset()) is None
    assert verify_lookup_protocol(registry)


def verify_lookup_protocol(registry: CertificateRegistry) -> bool:
    """The registry is what aegis.tls.selection expects (checked by mypy here)."""
    lookup: CertificateLookup = registry
    return lookup is registry


def test_expired_exact_never_beats_valid_wildcard(store: Any, clock: Clock) -> None:
    add(store, fields_for(("app.example.com",), NOW - timedelta(days=90), NOW - timedelta(1)))
    wild = add(store, current("*.example.com"))
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    picked = registry.lookup("app.example.com")
    assert picked is not None and picked.id == wild


def test_corrupted_key_is_flagged_and_others_serve(
    store: Any, clock: Clock, events: list[dict[str, Any]]
) -> None:
    good = current("good.example.com")
    blob = bytearray(good.key_sealed)
    blob[-1] ^= 1
    broken = add(store, replace(current("broken.example.com"), key_sealed=bytes(blob)))
    # A ciphertext copied from another row fails too: it is bound to its own uid.
    copied = add(store, replace(current("copied.example.com"), key_sealed=good.key_sealed))
    ok = add(store, good)
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    assert registry.lookup("good.example.com") is registry.by_id(ok)
    assert registry.lookup("broken.example.com") is None
    assert registry.lookup("copied.example.com") is None
    for flagged in (broken, copied):
        problem = registry.problem(flagged)
        assert problem is not None and problem.reason == "key_unreadable"
    assert registry.problem(ok) is None
    unusable = [e for e in events if e.get("event") == "certificate_unusable"]
    assert sorted(e["id"] for e in unusable) == [broken, copied]
    assert all("PRIVATE" not in repr(e) for e in events)


def test_wrong_master_key_flags_everything(store: Any, clock: Clock) -> None:
    add(store, current("app.example.com"))
    registry = CertificateRegistry(store, KeyWrapper(MasterKey.generate()), clock)
    snapshot = registry.load_blocking()
    assert snapshot.by_id == {} and len(snapshot.problems) == 1


def test_reload_emits_named_events_and_reuses_unchanged(
    store: Any, clock: Clock, events: list[dict[str, Any]]
) -> None:
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    first = add(store, current("one.example.com"))
    second = add(store, current("two.example.com"))
    seen: list[object] = []
    registry.subscribe(seen.append)
    snapshot = registry.reload()
    assert len(seen) == 1 and seen[0] is registry.snapshot
    assert [(e["event"], e["id"]) for e in events] == [
        ("certificate_added", first),
        ("certificate_added", second),
    ]
    kept = registry.by_id(first)

    new = current("two.example.com", days=200)
    store.transact_blocking(lambda t: t.replace_certificate(second, new))
    store.transact_blocking(lambda t: t.delete_certificate(first))
    events.clear()
    registry.reload()
    assert [(e["event"], e["id"]) for e in events] == [
        ("certificate_replaced", second),
        ("certificate_removed", first),
    ]
    assert registry.lookup("one.example.com") is None
    replaced = registry.lookup("two.example.com")
    assert replaced is not None and replaced.not_after == new.not_after
    for event in events:
        assert "names" in event and "PRIVATE KEY" not in repr(event)
        assert event["log_format"].startswith(event["event"] + " id={id}")
    assert kept is not None and snapshot is not None

    events.clear()
    unchanged = registry.by_id(second)
    registry.reload()
    assert events == [] and registry.by_id(second) is unchanged


def test_reload_failure_keeps_the_old_snapshot(clock: Clock, events: list[dict[str, Any]]) -> None:
    store = MemoryStore()
    add(store, current("app.example.com"))
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    before = registry.snapshot
    store.close()
    failures: list[Any] = []
    registry.reload().addErrback(failures.append)
    assert len(failures) == 1 and registry.snapshot is before
    assert events[-1]["event"] == "certificate_reload_failed"
    assert registry.lookup("app.example.com") is not None


def test_overlapping_reloads_are_serialised(clock: Clock) -> None:
    store = MemoryStore()
    builds: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def held_runner(work: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        builds.append((d, work))
        return d

    registry = CertificateRegistry(store, WRAPPER, clock, runner=held_runner)
    add(store, current("one.example.com"))
    results: list[Any] = []
    registry.reload().addCallback(results.append)
    add(store, current("two.example.com"))
    registry.reload().addCallback(results.append)
    registry.reload().addCallback(results.append)
    assert len(builds) == 1  # the later reloads wait for the first
    d, work = builds.pop()
    d.callback(work())
    assert len(results) == 1 and set(results[0].exact) == {"one.example.com"}
    assert len(builds) == 1  # one more run covers both queued callers
    d, work = builds.pop()
    d.callback(work())
    assert len(results) == 3 and results[1] is results[2] is registry.snapshot
    assert set(registry.snapshot.exact) == {"one.example.com", "two.example.com"}


def test_tampered_chain_or_key_is_flagged(store: Any, clock: Clock) -> None:
    one, two = current("one.example.com"), current("two.example.com")
    swapped = add(store, replace(one, chain_pem=two.chain_pem))
    garbage = add(store, replace(current("three.example.com"), chain_pem="not a chain"))
    not_a_key = replace(one, uid="f" * 32)
    not_a_key = replace(not_a_key, key_sealed=WRAPPER.seal(b"junk", f"certificate:{'f' * 32}:key"))
    junk = add(store, not_a_key)
    fine = add(store, two)
    registry = CertificateRegistry(store, WRAPPER, clock)
    registry.load_blocking()
    reasons = {i: p.reason for i, p in registry.snapshot.problems.items()}
    assert reasons == {swapped: "key_mismatch", garbage: "chain_invalid", junk: "key_invalid"}
    assert list(registry.snapshot.by_id) == [fine]


@pytest_twisted.ensureDeferred
async def test_reload_builds_on_the_reactor_thread_pool() -> None:
    from twisted.internet import reactor

    store = MemoryStore()
    cert_id = add(store, current("app.example.com"))
    pool = reactor_pool_runner(reactor)
    built_on: list[str] = []

    def observed(work: Callable[[], Any]) -> Deferred[Any]:
        def run() -> Any:
            built_on.append(threading.current_thread().name)
            return work()

        return pool(run)

    registry = CertificateRegistry(store, WRAPPER, reactor, runner=observed)
    snapshot = await registry.reload()
    assert snapshot is registry.snapshot and registry.by_id(cert_id) is not None
    assert built_on and built_on[0] != threading.current_thread().name
