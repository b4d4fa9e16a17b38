"""External account binding (RFC 8555 §7.3.4) against an EAB-required Pebble: without a
binding, with a wrong HMAC key, with the right one; the key never in logs, errors, the
store or a repr; an account per (directory, kid)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from aegis.config import ConfigError, Settings
from aegis.sources.acme.eab import EabError, ExternalAccount, external_account
from aegis.testing.pebble import PebbleServer, pebble_available
from tests.test_acme_pebble import ChallengeSite, Node, module_pebble, wait_until
from tests.test_acme_pebble import site as site  # the fixture, with this module's pebble

RIGHT = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
WRONG = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
KID = "aegis-test-kid"


def test_settings_need_both_and_hide_the_key() -> None:
    assert external_account("", "") is None
    with pytest.raises(EabError, match="without AEGIS_ACME_EAB_KID"):
        external_account("", RIGHT)
    with pytest.raises(EabError, match="without AEGIS_ACME_EAB_HMAC_KEY"):
        external_account(KID, "")
    account = external_account(KID, RIGHT)
    assert account == ExternalAccount(KID, RIGHT) and RIGHT not in repr(account)
    settings = Settings.load(environ={"AEGIS_ACME_EAB_KID": KID,
                                      "AEGIS_ACME_EAB_HMAC_KEY": RIGHT})
    assert settings.acme_eab_hmac_key == RIGHT and RIGHT not in repr(settings)
    with pytest.raises(ConfigError) as bad:
        Settings.load(environ={"AEGIS_ACME_EAB_HMAC_KEY": "short-" + RIGHT[:8]})
    assert RIGHT[:8] not in str(bad.value) and "(hidden)" in str(bad.value)


pebble = module_pebble("pebble-eab", eab_keys={KID: RIGHT})


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(repr(event) + (formatEvent(event) or ""))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


async def _attempt(pebble: PebbleServer, site: ChallengeSite, name: str,
                   account: ExternalAccount | None, node: Node | None = None) -> Node:
    node = node or Node(pebble, site)
    node.external_account = account
    node.add_hosts(name)
    await node.boot()
    await wait_until(lambda: node.state(name) is not None
                     and node.state(name).status in ("valid", "failed"))
    await node.stop()
    return node


def _stored_text(node: Node) -> str:
    settings = repr(node.store.transact_blocking(lambda txn: dict(txn._t.settings)))
    assert "acme_account_key" in settings  # the whole settings table (MemoryStore's)
    return settings + repr(node.certificates()) + repr(
        node.store.transact_blocking(lambda t: t.list_issuance_states()))


@pytest.mark.integration
@pytest.mark.skipif(not pebble_available(), reason="pebble is not installed")
@pytest_twisted.ensureDeferred
async def test_without_a_binding_the_error_names_the_settings(
    pebble: PebbleServer, site: ChallengeSite,
) -> None:
    node = await _attempt(pebble, site, "noeab.example.test", None)
    state = node.state("noeab.example.test")
    assert state.status == "failed"
    assert "AEGIS_ACME_EAB_KID" in state.last_error and "AEGIS_ACME_EAB_HMAC_KEY" in (
        state.last_error)


@pytest.mark.integration
@pytest.mark.skipif(not pebble_available(), reason="pebble is not installed")
@pytest_twisted.ensureDeferred
async def test_a_wrong_key_fails_and_the_right_one_issues(
    pebble: PebbleServer, site: ChallengeSite, logged: list[str],
) -> None:
    node = await _attempt(pebble, site, "eab.example.test", ExternalAccount(KID, WRONG))
    state = node.state("eab.example.test")
    assert state.status == "failed"
    assert "refused the external account binding of kid 'aegis-test-kid'" in (
        state.last_error or ""), state.last_error
    assert node.certificates() == []
    # the right key: the same store, a retry registers and issues
    node.external_account = ExternalAccount(KID, RIGHT)
    engine = await node.boot()
    await engine.retry("eab.example.test")
    await wait_until(lambda: node.state("eab.example.test").status == "valid")
    assert node.state("eab.example.test").issuer == (
        f"acme {pebble.directory_url} eab:{KID}")
    scope = f"acme_account_url:{pebble.directory_url} eab:{KID}"
    assert node.store.transact_blocking(lambda t: t.get_setting(scope))
    assert node.store.transact_blocking(
        lambda t: t.get_setting(f"acme_account_url:{pebble.directory_url}")) is None
    await node.stop()
    for secret in (RIGHT, WRONG):
        assert not any(secret in line for line in logged)
        assert secret not in _stored_text(node)
