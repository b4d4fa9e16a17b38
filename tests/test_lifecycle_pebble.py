"""Issue 14's ACME faults 2-5 against a real Pebble: the lifecycle engine and the ACME
issuer over the network, the schedule on a Clock (see tests/test_acme_pebble.py's Node).

Fault 1 (deleting the certificate a host serves) is tested through a real ``aegis run`` in
tests/test_lifecycle_api*.py; its engine side in tests/test_lifecycle_acme.py.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.web.server import Site

from aegis.certs.lifecycle import RequestBudget
from aegis.certs.lifecycle.budget import FAILURES_PER_WINDOW, REQUEST_BURST, REQUESTS_PER_SECOND
from aegis.testing.pebble import PebbleServer, pebble_available, start_pebble
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


pebble = module_pebble("pebble-lifecycle")


@pytest_twisted.ensureDeferred
async def test_fault_2_another_directory_reissues_every_name_at_once(
    pebble: PebbleServer, site: ChallengeSite, tmp_path: Path
) -> None:
    node = Node(pebble, site)
    await node.issue("one.example.test", "two.example.test")
    before = {c.domains: c for c in node.certificates()}
    other = start_pebble(tmp_path / "other-ca")  # AEGIS_ACME_DIRECTORY now names another CA
    other_site = ChallengeSite()
    port = reactor.listenTCP(other.http_port, Site(other_site), interface="127.0.0.1")
    try:
        node.pebble, node.site = other, other_site
        engine = await node.boot()
        await wait_until(lambda: all(
            c.extra.get("issued_by") == f"acme {other.directory_url}"
            for c in node.certificates()), timeout=60)
        assert other.orders_created() == 2
        for cert in node.certificates():
            assert cert.id == before[cert.domains].id  # in place: host bindings follow
            assert_chains_to_pebble(cert.chain_pem, cert.domains[0], other)
        assert {s.issuer for s in engine.states()} == {f"acme {other.directory_url}"}
        await node.stop()
    finally:
        await port.stopListening()
        other.close()


@pytest_twisted.ensureDeferred
async def test_fault_3_failed_validations_stay_within_the_budget(
    pebble: PebbleServer, site: ChallengeSite
) -> None:
    """Pebble's validation fails (our port 80 answers nothing): at most 3 attempts, and so
    at most 3 failed authorisations, in any simulated hour."""
    node = Node(pebble, site)
    node.add_hosts("unreachable.example.test")
    engine = await node.build()
    site.responder = None  # every challenge request gets a 404
    attempts: list[float] = []
    engine.events.subscribe(
        lambda e: attempts.append(e.at.timestamp()) if e.name == "cert_obtaining" else None)
    before = pebble.orders_created()
    await engine.startService()
    site.responder = None
    for _ in range(2 * 60):  # two simulated hours, a minute at a time
        await wait_until(lambda: not engine.in_flight("unreachable.example.test"))
        node.clock.advance(60)
        await deferLater(reactor, 0.01, lambda: None)
    await wait_until(lambda: not engine.in_flight("unreachable.example.test"))
    for start in attempts:
        assert len([t for t in attempts if start <= t < start + 3600]) <= FAILURES_PER_WINDOW
    assert len(attempts) >= FAILURES_PER_WINDOW + 1  # it went on trying in the next hour
    assert pebble.orders_created() - before == len(attempts)
    state = node.state("unreachable.example.test")
    assert state.status == "failed" and state.failures == len(attempts)
    await node.stop()


@pytest_twisted.ensureDeferred
async def test_fault_4_an_order_in_flight_is_abandoned_when_its_host_goes(
    pebble: PebbleServer, site: ChallengeSite
) -> None:
    node = Node(pebble, site)
    node.add_hosts("leaving.example.test")
    site.hold = True  # Pebble's validation request waits: the order is mid-way
    try:
        engine = await node.boot()
        await wait_until(lambda: bool(site.held))
        assert engine.in_flight("leaving.example.test")

        def remove(txn: Any) -> None:
            for host in txn.list_hosts():
                if host.domain == "leaving.example.test":
                    txn.delete_host(host.id)

        node.store.transact_blocking(remove)
        await engine.refresh()
        assert not engine.in_flight("leaving.example.test")
    finally:
        site.release()  # Pebble now gets a 404: the order fails at the CA
    state = node.state("leaving.example.test")
    assert state.status == "retired" and state.order_url is None
    assert state.pending_key_sealed is None
    assert node.store.transact_blocking(lambda t: t.list_acme_challenges()) == []
    await node.boot()  # a restart does not resume it either
    await deferLater(reactor, 0.5, lambda: None)
    assert node.certificates() == []
    assert node.state("leaving.example.test").status == "retired"
    await node.stop()


_REQUEST = re.compile(r"^Pebble (\S+ \S+) (?:GET|HEAD|POST) \S+ -> calling handler", re.M)


@pytest_twisted.ensureDeferred
async def test_fault_5_thirty_hosts_at_once_stay_within_the_request_budget(
    tmp_path: Path,
) -> None:
    """30 hosts created at once used to send 200-300 requests per second. With the
    engine's per-CA budget (10/s, bursts of 10) Pebble's own log, per wall-clock second,
    never sees more than one burst plus one second's rate."""
    server = start_pebble(tmp_path / "budget-ca")
    resource = ChallengeSite()
    port = reactor.listenTCP(server.http_port, Site(resource), interface="127.0.0.1")
    try:
        node = Node(server, resource)
        node.pace = RequestBudget(reactor).take  # as IssuerContext.pace does in aegis run
        names = [f"b{i}.example.test" for i in range(30)]
        node.add_hosts(*names)
        mark = len(_REQUEST.findall(server.log_text()))
        engine = await node.boot()
        for name in names:
            await wait_until(lambda n=name: (engine.state(n) is not None
                                             and engine.state(n).status == "valid"),  # type: ignore[union-attr]
                             timeout=120)
        per_second = Counter(_REQUEST.findall(server.log_text())[mark:])
        print(f"busiest second: {max(per_second.values())} requests; "
              f"{sum(per_second.values())} in {len(per_second)} s")
        assert max(per_second.values()) <= REQUEST_BURST + REQUESTS_PER_SECOND
        assert len(node.certificates()) == 30
        await node.stop()
    finally:
        await port.stopListening()
        server.close()
