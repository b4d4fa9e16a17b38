"""A fallback CA: two real Pebbles, the first down. The second takes over within the same
attempt, names ordered later skip the CA marked down, each certificate records the CA that
issued it, and once the first is back (and its down mark has passed) renewals go to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.web.server import Site

from aegis.certs.lifecycle import LifecycleEngine
from aegis.certs.lifecycle.issuers import ChallengeResponders
from aegis.config import Settings
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.sources.acme import SOURCE, build_acme
from aegis.sources.acme.fallback import DOWN_FOR, FallbackIssuer, parse_directories
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.store.memory import MemoryStore
from aegis.store.records import HostFields
from aegis.testing.pebble import PebbleServer, pebble_available, start_pebble
from tests.test_acme_pebble import FAST, ChallengeSite, assert_chains_to_pebble, wait_until


def test_the_directory_list_setting() -> None:
    assert parse_directories("") == ()
    assert parse_directories(" https://a/dir , https://b/dir") == ("https://a/dir",
                                                                  "https://b/dir")
    for bad in ("http://a/dir", "https://a/dir,https://a/dir", "https://a /dir"):
        with pytest.raises(ValueError):
            parse_directories(bad)
    settings = Settings.load(environ={
        "AEGIS_ACME_FALLBACK_DIRECTORIES": "https://acme.zerossl.com/v2/DV90"})
    assert settings.acme_fallback_directories == ("https://acme.zerossl.com/v2/DV90",)


@pytest.fixture(scope="module")
def pebbles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PebbleServer]]:
    servers = [start_pebble(tmp_path_factory.mktemp(f"pebble-{n}")) for n in ("a", "b")]
    yield servers
    for server in servers:
        server.close()


def _host(store: Any, domain: str) -> None:
    fields = HostFields(domain=domain, upstream="http://127.0.0.1:1", ssl_mode="letsencrypt")
    store.transact_blocking(lambda txn: txn.add_host(fields))


@pytest.mark.integration
@pytest.mark.skipif(not pebble_available(), reason="pebble is not installed")
@pytest_twisted.ensureDeferred
async def test_the_second_ca_takes_over_while_the_first_is_down(
    pebbles: list[PebbleServer], tmp_path: Path,
) -> None:
    first, second = pebbles
    store, wrapper, clock = MemoryStore(), KeyWrapper(MasterKey.generate()), Clock()
    clock.advance(time.time())
    parts = [build_acme(reactor, store, wrapper, p.directory_url, ca_bundle=p.ca_bundle,
                        policy=FAST, clock=clock, origin_only=True) for p in pebbles]
    # One bundle trusts only its own Pebble's TLS: each client has its own.
    issuer = FallbackIssuer(clock, [p.issuer for p in parts])
    site = ChallengeSite()
    site.responder = ChallengeResponders([p.responder for p in parts])  # type: ignore[assignment]
    ports = [reactor.listenTCP(p.http_port, Site(site), interface="127.0.0.1") for p in pebbles]
    engine = LifecycleEngine(clock, store, wrapper, {SOURCE: issuer}, lambda: None,
                             jitter=lambda: 0.5)
    first.stop()
    try:
        _host(store, "one.example.test")
        await engine.startService()
        await wait_until(lambda: (engine.state("one.example.test") or Any).status == "valid",
                         timeout=60)
        (cert,) = store.transact_blocking(lambda t: t.list_certificates())
        assert cert.extra["issued_by"] == f"acme {second.directory_url}"
        assert engine.state("one.example.test").issuer == f"acme {second.directory_url}"  # type: ignore[union-attr]
        assert_chains_to_pebble(cert.chain_pem, "one.example.test", second)
        assert issuer.down() == [f"acme {first.directory_url}"]
        # a name ordered now goes straight to the second CA: nothing waits on the first
        _host(store, "two.example.test")
        started = time.monotonic()
        await engine.refresh()
        await wait_until(lambda: (engine.state("two.example.test") or Any).status == "valid")
        assert time.monotonic() - started < 10
        # the fallback's certificate is current: not renewed at once
        assert engine.state("one.example.test").renews_at > engine.now()  # type: ignore[union-attr,operator]
        # the first CA is back; after its down mark, a renewal goes to it again
        first.start()
        state = engine.state("one.example.test")
        assert state is not None and state.renews_at is not None
        clock.advance(max(DOWN_FOR, (state.renews_at - engine.now()).total_seconds()) + 1)
        def one() -> list[Any]:
            return [c for c in store.transact_blocking(lambda t: t.list_certificates())
                    if c.domains == ("one.example.test",)]

        await wait_until(lambda: one()[0].extra["issued_by"] == f"acme {first.directory_url}",
                         timeout=60)
        renewed = one()
        assert renewed[0].id == cert.id  # in place
        assert_chains_to_pebble(renewed[0].chain_pem, "one.example.test", first)
    finally:
        await engine.stopService()
        for port in ports:
            await port.stopListening()
        if not first.running:
            first.start()


def test_the_source_builds_one_issuer_and_account_per_directory() -> None:
    from aegis.certs.lifecycle.issuers import IssuerContext, build_issuers
    from aegis.events import EventPublisher

    clock = Clock()
    settings = Settings.load(environ={
        "AEGIS_ACME_DIRECTORY": "https://one.test/dir",
        "AEGIS_ACME_FALLBACK_DIRECTORIES": "https://two.test/dir,https://three.test/dir"})
    context = IssuerContext(clock, clock, MemoryStore(), KeyWrapper(MasterKey.generate()),
                            settings, EventPublisher(clock))
    issuer = build_issuers(context)[SOURCE]
    assert isinstance(issuer, FallbackIssuer)
    assert [i.identity for i in issuer.issuers] == [
        "acme https://one.test/dir", "acme https://two.test/dir", "acme https://three.test/dir"]
    assert issuer.identity == "acme https://one.test/dir"
    assert {"https://one.test/dir", "https://two.test/dir",
            "https://three.test/dir"} <= set(context.budgets)  # a request budget per CA
    assert len([r for r in context.responders if isinstance(r, ChallengeResponder)]) == 3
