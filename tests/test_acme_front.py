"""ARI and profiles against a real Pebble through the test front (aegis.testing.acme_front):
the ACME issuer and the lifecycle engine run the real flow (account, order, HTTP-01,
finalize) while the front adds ``renewalInfo`` and ``meta.profiles`` that Pebble 2.4 lacks.
The engine's clock is a ``Clock``; the network runs on the real reactor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from aegis.certs.lifecycle.policy import ceil_second, lifetime_renewal_time
from aegis.sources.acme import ari
from aegis.sources.acme.profiles import PROFILE_KEY
from aegis.store.records import HostFields
from aegis.testing.acme_front import AcmeFront, listen_front
from aegis.testing.pebble import PebbleServer, pebble_available
from tests.test_acme_pebble import (
    ChallengeSite,
    Node,
    assert_chains_to_pebble,
    module_pebble,
    wait_until,
)
from tests.test_acme_pebble import site as site  # the fixture, with this module's pebble

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pebble_available(), reason="pebble is not installed"),
]


pebble = module_pebble("pebble-front")


@pytest.fixture
def front(pebble: PebbleServer) -> Iterator[tuple[AcmeFront, str]]:
    resource = AcmeFront(reactor, f"https://127.0.0.1:{pebble.acme_port}", pebble.ca_bundle)
    port = listen_front(reactor, resource, pebble.workdir / "pebble-cert.pem",
                        pebble.workdir / "pebble-key.pem")
    yield resource, f"https://127.0.0.1:{port.getHost().port}/dir"
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_renewal_follows_the_window_and_sends_replaces(
    pebble: PebbleServer, site: ChallengeSite, front: tuple[AcmeFront, str]
) -> None:
    resource, url = front
    node = Node(pebble, site)
    node.directory_url = url
    base = datetime.fromtimestamp(node.clock.seconds(), UTC).replace(microsecond=0)
    resource.window = (base + timedelta(days=30), base + timedelta(days=31))
    resource.retry_after = 120
    engine = await node.issue("ari.example.test")
    (first,) = node.certificates()
    assert_chains_to_pebble(first.chain_pem, "ari.example.test", pebble)
    cert_id = ari.certificate_id_of_pem(first.chain_pem)
    await wait_until(lambda: cert_id in resource.renewal_info_requests)
    await wait_until(lambda: node.state("ari.example.test").renews_at <= resource.window[1])
    renews_at = node.state("ari.example.test").renews_at
    assert resource.window[0] <= renews_at <= resource.window[1]  # Pebble's 5-year rule: years
    assert "replaces" not in resource.new_orders[0]
    # The window moves into the past for this certificate: renewed at the next check.
    resource.windows[cert_id] = (first.not_before - timedelta(hours=1),
                                 first.not_before + timedelta(minutes=1))
    node.clock.advance(121)
    await wait_until(lambda: node.state("ari.example.test").renews_at < renews_at)
    node.clock.advance(1)  # the engine's timer runs on the Clock: let it fire
    await wait_until(
        lambda: node.certificates()[0].fingerprint_sha256 != first.fingerprint_sha256)
    assert node.certificates()[0].id == first.id
    assert [o.get("replaces") for o in resource.new_orders] == [None, cert_id]
    assert engine.state("ari.example.test").status == "valid"
    await deferLater(reactor, 0.1, lambda: None)
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_without_renewal_info_the_lifetime_rule_holds(
    pebble: PebbleServer, site: ChallengeSite, front: tuple[AcmeFront, str]
) -> None:
    resource, url = front
    resource.renewal_info = False
    node = Node(pebble, site)
    node.directory_url = url
    await node.issue("noari.example.test")
    (cert,) = node.certificates()
    state = node.state("noari.example.test")
    assert state.renews_at == ceil_second(lifetime_renewal_time(cert.not_before, cert.not_after))
    assert resource.renewal_info_requests == []
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_the_host_profile_is_sent_to_the_ca(
    pebble: PebbleServer, site: ChallengeSite, front: tuple[AcmeFront, str]
) -> None:
    resource, url = front
    node = Node(pebble, site)
    node.directory_url = url
    fields = HostFields(domain="short.example.test", upstream="http://127.0.0.1:1",
                        ssl_mode="letsencrypt", extra={PROFILE_KEY: "shortlived"})
    node.store.transact_blocking(lambda txn: txn.add_host(fields))
    await node.boot()
    await wait_until(lambda: node.state("short.example.test") is not None
                     and node.state("short.example.test").status == "valid")
    assert [o.get("profile") for o in resource.new_orders] == ["shortlived"]
    await node.stop()
