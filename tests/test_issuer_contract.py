"""Every issuer against one contract (:mod:`tests.issuer_contract`): the fake, ACME against
a real Pebble (HTTP-01 answered over real HTTP on Pebble's validation port), and Cloudflare
Origin against the shipped fake API over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.sources.acme import build_acme
from aegis.sources.cloudflare import Credentials, OriginIssuer
from aegis.store.memory import MemoryStore
from aegis.testing.cloudflare import Fault
from aegis.testing.issuer import FakeIssuer
from aegis.testing.pebble import PebbleServer, pebble_available
from tests.issuer_contract import IssuerContract, IssuerSubject
from tests.test_acme_pebble import FAST, ChallengeSite, pebble, site
from tests.test_cloudflare_fake import TOKEN, Running, serve_fake

running_fake = pytest.fixture(serve_fake, name="running_fake")
__all__ = ["pebble", "site"]  # the Pebble fixtures, used by TestAcmeIssuer


class TestFakeIssuer(IssuerContract):
    @pytest.fixture
    def subject(self) -> IssuerSubject:
        issuer = FakeIssuer(reactor, identity="fake-ca contract")  # type: ignore[arg-type]
        return IssuerSubject(issuer, "contract.test", fail_once=issuer.fail_next)


class TestDelayedFakeIssuer(IssuerContract):
    """The fake answering through ``callLater``, as tests observing in-flight states use it."""

    @pytest.fixture
    def subject(self) -> IssuerSubject:
        issuer = FakeIssuer(reactor, delay=0.01, key_kind="rsa-2048")  # type: ignore[arg-type]
        return IssuerSubject(issuer, "contract.test", fail_once=issuer.fail_next)


@pytest.mark.integration
@pytest.mark.skipif(not pebble_available(), reason="pebble is not installed")
class TestAcmeIssuer(IssuerContract):
    @pytest.fixture
    def subject(self, pebble: PebbleServer, site: ChallengeSite) -> IssuerSubject:
        store, wrapper = MemoryStore(), KeyWrapper(MasterKey.generate())
        parts = build_acme(reactor, store, wrapper, pebble.directory_url,
                           ca_bundle=pebble.ca_bundle, policy=FAST)
        site.responder = parts.responder

        def fail_once() -> None:
            site.responder = None  # Pebble's HTTP-01 fetch gets a 404: validation fails

        def recover() -> None:
            site.responder = parts.responder

        return IssuerSubject(parts.issuer, "contract.example.test", fail_once, recover)


class TestOriginIssuer(IssuerContract):
    @pytest.fixture
    def subject(self, running_fake: Running) -> Iterator[IssuerSubject]:
        client = running_fake.client()
        issuer = OriginIssuer(client, reactor,  # type: ignore[arg-type]
                              credentials=Credentials("api_token", TOKEN))

        def fail_once() -> None:
            running_fake.fake.inject(Fault(status=400, code=1201, message="CA signing failure"))

        yield IssuerSubject(issuer, "example.com", fail_once)
        pytest_twisted.blockon(client.close())

