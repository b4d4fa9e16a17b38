"""The ACME source against a real Pebble (Let's Encrypt's test CA), nonce rejection on.

Pebble and its DNS helper run on free ports (see :mod:`aegis.testing.pebble`); the HTTP-01
answers are served on Pebble's ``httpPort`` by a tiny twisted.web server that calls
:func:`challenge_response`, as the real HTTP listener does. The lifecycle engine runs on a
``Clock`` (so renewal and backoff are tested by moving it) while the network runs on the real
reactor. Skipped only if ``pebble`` is not installed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from aegis.certs.lifecycle import LifecycleEngine
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.service import freeze_startup_heap
from aegis.sources.acme import SOURCE, AcmeParts, RetryPolicy, build_acme, challenge_response
from aegis.sources.acme.http01 import ChallengeResponder
from aegis.store._runner import StoreThread
from aegis.store.memory import MemoryStore
from aegis.store.records import HostFields
from aegis.store.sqlite import SQLiteStore
from aegis.testing.pebble import PebbleServer, pebble_available, start_pebble

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pebble_available(), reason="pebble is not installed"),
]

FAST = RetryPolicy(transient_attempts=2, backoff_base=0.05, request_timeout=10)


class ChallengeSite(Resource):
    """Pebble's HTTP-01 target. ``hold`` parks requests until :meth:`release`."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.responder: ChallengeResponder | None = None
        self.hold = False
        self.held: list[Request] = []
        self.hits = 0

    def _answer(self, request: Request) -> bytes:
        status, body = (404, b"")
        if self.responder is not None:
            status, body = challenge_response(
                request.method, request.uri, self.responder, request.getHeader(b"host")
            )
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain")
        return body

    def render(self, request: Request) -> Any:
        self.hits += 1
        if self.hold:
            self.held.append(request)
            return NOT_DONE_YET
        return self._answer(request)

    def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for request in held:
            request.write(self._answer(request))
            request.finish()


def module_pebble(directory: str, **options: Any) -> Any:
    """A module-scoped ``pebble`` fixture: a Pebble of the module's own, started with
    ``options`` (see :func:`start_pebble`). Other modules import :func:`site` with it: the
    fixture resolves ``pebble`` in the module that uses it."""

    @pytest.fixture(scope="module")
    def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
        server = start_pebble(tmp_path_factory.mktemp(directory), **options)
        yield server
        server.close()

    return pebble


pebble = module_pebble("pebble")


@pytest.fixture(scope="module")
def site(pebble: PebbleServer) -> Iterator[ChallengeSite]:
    resource = ChallengeSite()
    port = reactor.listenTCP(pebble.http_port, Site(resource), interface="127.0.0.1")
    yield resource
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


class Node:
    """One Aegis process's ACME parts over a shared store; ``boot`` simulates a restart."""

    def __init__(self, pebble: PebbleServer, site: ChallengeSite, store: Any = None) -> None:
        self.pebble = pebble
        self.site = site
        self.store = store if store is not None else MemoryStore()
        self.wrapper = KeyWrapper(MasterKey.generate())
        self.clock = Clock()
        self.clock.advance(time.time())
        self.reloads = 0
        self.parts: AcmeParts | None = None
        self.engine: LifecycleEngine | None = None
        self.pace: Any = None
        self.directory_url: str | None = None  # another than Pebble's own (a front)
        self.challenge = "http-01"
        self.external_account: Any = None

    def add_hosts(self, *domains: str) -> None:
        def work(txn: Any) -> None:
            for domain in domains:
                txn.add_host(
                    HostFields(domain=domain, upstream="http://127.0.0.1:1", ssl_mode="letsencrypt")
                )

        self.store.transact_blocking(work)

    def _reload(self) -> None:
        self.reloads += 1

    async def boot(self) -> LifecycleEngine:
        engine = await self.build()
        await engine.startService()
        return engine

    async def issue(self, *domains: str) -> LifecycleEngine:
        """Add ``domains`` as letsencrypt hosts, boot, and wait until each has settled."""
        self.add_hosts(*domains)
        engine = await self.boot()
        for domain in domains:
            await wait_until(_status(self, domain, "valid", "failed"))
        return engine

    async def build(self) -> LifecycleEngine:
        """Build the ACME issuer and the lifecycle engine as start-up does (blocking store
        reads), without starting them."""
        await self.stop()
        self.parts = build_acme(
            reactor,
            self.store,
            self.wrapper,
            self.directory_url or self.pebble.directory_url,
            ca_bundle=self.pebble.ca_bundle,
            policy=FAST,
            clock=self.clock,
            pace=self.pace,
            challenge=self.challenge,
            external_account=self.external_account,
        )
        self.site.responder = self.parts.responder
        self.engine = LifecycleEngine(
            self.clock, self.store, self.wrapper, {SOURCE: self.parts.issuer}, self._reload,
            preload=[self.parts.responder.load],
        )
        return self.engine

    async def stop(self) -> None:
        if self.engine is not None and self.engine.running:
            await self.engine.stopService()

    def state(self, name: str) -> Any:
        return self.store.transact_blocking(lambda t: t.get_issuance_state(name))

    def certificates(self) -> list[Any]:
        return self.store.transact_blocking(lambda t: t.list_certificates())  # type: ignore[no-any-return]


async def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await deferLater(reactor, 0.02, lambda: None)


def _status(node: Node, name: str, *statuses: str) -> Callable[[], bool]:
    def check() -> bool:
        state = node.state(name)
        return state is not None and state.status in statuses

    return check


def assert_chains_to_pebble(chain_pem: str, name: str, pebble: PebbleServer) -> None:
    from cryptography.x509.verification import PolicyBuilder, Store

    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
    verified = verifier.verify(chain[0], chain[1:])
    assert verified[-1] == root


@pytest_twisted.ensureDeferred
async def test_issues_a_certificate_chaining_to_pebble_root(
    pebble: PebbleServer, site: ChallengeSite, events: list[dict[str, Any]]
) -> None:
    node = Node(pebble, site)
    await node.issue("issue.example.test")
    state = node.state("issue.example.test")
    assert state.status == "valid", state.last_error
    (cert,) = node.certificates()
    assert cert.source == "letsencrypt" and cert.auto_renew
    assert_chains_to_pebble(cert.chain_pem, "issue.example.test", pebble)
    assert site.hits >= 1  # Pebble really fetched the HTTP-01 answer from us
    assert node.reloads == 1
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_bad_nonces_retried(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """With 30% of nonces rejected, three certificates still come out."""
    server = start_pebble(tmp_path / "pebble30", nonce_reject_percent=30)
    resource = ChallengeSite()
    port = reactor.listenTCP(server.http_port, Site(resource), interface="127.0.0.1")
    try:
        node = Node(server, resource)
        names = ("n1.example.test", "n2.example.test", "n3.example.test")
        await node.issue(*names)
        for name in names:
            assert node.state(name).status == "valid", node.state(name).last_error
        assert any("acme_bad_nonce" in e.get("log_format", "") for e in events)
        await node.stop()
    finally:
        await port.stopListening()
        server.close()


@pytest_twisted.ensureDeferred
async def test_pebble_down_backoff_then_back(
    pebble: PebbleServer, site: ChallengeSite, events: list[dict[str, Any]]
) -> None:
    node = Node(pebble, site)
    engine = await node.issue("down.example.test")
    (first,) = node.certificates()
    pebble.stop()
    try:
        await engine.obtain("down.example.test", force=True)
        failed = node.state("down.example.test")
        assert failed.status == "failed" and failed.failures == 1
        assert "cannot reach" in failed.last_error or "HTTP 5" in failed.last_error
        assert failed.next_attempt_at > failed.last_attempt_at
        assert node.certificates() == [first]  # old certificate untouched, still served
        assert engine.state("down.example.test") == failed
    finally:
        pebble.start()  # new roots, and every account forgotten
    node.clock.advance((failed.next_attempt_at - engine.now()).total_seconds() + 1)
    await wait_until(lambda: node.state("down.example.test").status == "valid")
    (renewed,) = node.certificates()
    assert renewed.id == first.id and renewed.fingerprint_sha256 != first.fingerprint_sha256
    assert_chains_to_pebble(renewed.chain_pem, "down.example.test", pebble)
    registered = [e for e in events if "acme_account_registered" in e.get("log_format", "")]
    assert len(registered) == 2  # the lost account was registered again
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_restarts_never_duplicate_orders(
    pebble: PebbleServer, site: ChallengeSite
) -> None:
    node = Node(pebble, site)
    node.add_hosts("restart.example.test")
    before = pebble.orders_created()
    site.hold = True  # Pebble's validation request waits: the order is mid-way
    try:
        await node.boot()
        await wait_until(lambda: bool(site.held))
        state = node.state("restart.example.test")
        assert state.status == "obtaining" and state.order_url
        await node.boot()  # restart mid-order
    finally:
        site.release()
    await wait_until(_status(node, "restart.example.test", "valid", "failed"))
    assert node.state("restart.example.test").status == "valid"
    await node.boot()  # restart after issuance
    node.engine.certificate_wanted("restart.example.test")  # type: ignore[union-attr]
    await deferLater(reactor, 0.3, lambda: None)
    assert pebble.orders_created() - before == 1
    assert len(node.certificates()) == 1
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_renewal_by_moving_the_clock(
    pebble: PebbleServer, site: ChallengeSite, events: list[dict[str, Any]]
) -> None:
    node = Node(pebble, site)
    engine = await node.issue("renew.example.test")
    (first,) = node.certificates()
    renews_at = node.state("renew.example.test").renews_at
    node.clock.advance((renews_at - engine.now()).total_seconds() - 3600)
    await deferLater(reactor, 0.2, lambda: None)
    assert node.certificates() == [first]
    node.clock.advance(3601 + 600)
    await wait_until(lambda: node.certificates()[0].fingerprint_sha256 != first.fingerprint_sha256)
    assert node.certificates()[0].id == first.id
    assert any(e.get("event") == "cert_renewed" for e in events)
    assert node.reloads == 2
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_twenty_hosts_at_once_without_blocking_the_loop(
    pebble: PebbleServer, site: ChallengeSite, tmp_path: Path
) -> None:
    thread = StoreThread(reactor)
    thread.startService()
    store = SQLiteStore.open(tmp_path / "aegis.db", thread.runner())
    try:
        node = Node(pebble, site, store)
        names = [f"h{i}.example.test" for i in range(20)]
        node.add_hosts(*names)
        lags: list[float] = []
        last = [time.monotonic()]

        def probe() -> None:
            now = time.monotonic()
            lags.append(now - last[0] - 0.01)
            last[0] = now

        # Start-up's blocking store reads happen before the reactor runs in production, and
        # the wait below reads the manager's memory: a blocking store read here would measure
        # the test's own wait for the store thread (an fsync under load), not the manager.
        manager = await node.build()

        def settled(name: str) -> Callable[[], bool]:
            def check() -> bool:
                state = manager.state(name)
                return state is not None and state.status in ("valid", "failed")

            return check

        freeze_startup_heap()  # as `aegis run` does once ready; here it holds pytest's heap
        probe_loop = LoopingCall(probe)
        probe_loop.clock = reactor
        last[0] = time.monotonic()
        probe_loop.start(0.01, now=False)
        try:
            started = time.monotonic()
            await manager.startService()
            for name in names:
                await wait_until(settled(name), timeout=60)
            elapsed = time.monotonic() - started
        finally:
            probe_loop.stop()
            gc.unfreeze()
        assert all(node.state(n).status == "valid" for n in names)
        assert len(node.certificates()) == 20
        assert node.engine is not None and node.engine.attempts_started == 20
        # Blocking work on the loop (key generation, store I/O) would stall it once per
        # order. What remains is one burst: when the shared directory fetch completes, the
        # 20 waiting orders each sign and send their first request in that turn (~2 ms of
        # Python each). So: almost every tick on time, and no single stall near a blocking one.
        on_time = sorted(lags)[int(len(lags) * 0.95)]
        assert on_time < 0.050, f"95% of ticks within {on_time * 1000:.1f} ms"
        assert max(lags) < 0.150, f"loop blocked {max(lags) * 1000:.1f} ms"
        print(f"20 issuances in {elapsed:.2f}s; max loop lag {max(lags) * 1000:.1f} ms")
        await node.stop()
    finally:
        store.close()
        thread.stopService()
