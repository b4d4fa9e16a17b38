"""Where the admin token comes from: environment, generated file, digest in settings."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.test.requesthelper import DummyRequest

from aegis.admin import TOKEN_DIGEST_SETTING, TOKEN_FILE, ApiError, resolve_admin_token
from aegis.admin._guards import TokenVerifier, token_digest
from aegis.config import Settings
from aegis.store.memory import MemoryStore

ENV_TOKEN = "operator-chosen-token-123456"


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def request_with(header: bytes | None) -> DummyRequest:
    request = DummyRequest([b""])
    if header is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [header])
    return request


def accepts(verifier: TokenVerifier, token: str) -> bool:
    try:
        verifier.check(request_with(b"Bearer " + token.encode()))
    except ApiError:
        return False
    return True


def setting(store: MemoryStore) -> str | None:
    return store.transact_blocking(lambda txn: txn.get_setting(TOKEN_DIGEST_SETTING))


def test_environment_token_is_used_and_nothing_is_stored(tmp_path: Path) -> None:
    store = MemoryStore()
    settings = Settings(data_dir=tmp_path / "data", admin_token=ENV_TOKEN)
    verifier = resolve_admin_token(settings, store)
    assert accepts(verifier, ENV_TOKEN) and not accepts(verifier, ENV_TOKEN + "x")
    assert setting(store) is None
    assert not (tmp_path / "data" / TOKEN_FILE).exists()


def test_first_run_generates_a_token_file_and_stores_only_its_digest(
    tmp_path: Path, logged: list[LogEvent]
) -> None:
    store = MemoryStore()
    settings = Settings(data_dir=tmp_path / "data")
    verifier = resolve_admin_token(settings, store)
    path = tmp_path / "data" / TOKEN_FILE
    token = path.read_text().strip()
    assert len(token) >= 43  # token_urlsafe(32)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert setting(store) == token_digest(token) != token
    assert accepts(verifier, token)
    text = "\n".join(formatEvent(event) for event in logged)
    assert str(path) in text and token not in text
    assert token not in repr(verifier)


def test_restart_keeps_the_token(tmp_path: Path, logged: list[LogEvent]) -> None:
    store = MemoryStore()
    settings = Settings(data_dir=tmp_path / "data")
    resolve_admin_token(settings, store)
    path = tmp_path / "data" / TOKEN_FILE
    token, mtime = path.read_text().strip(), path.stat().st_mtime_ns
    logged.clear()
    verifier = resolve_admin_token(settings, store)
    assert accepts(verifier, token)
    assert path.stat().st_mtime_ns == mtime
    assert not logged  # the path is logged once, when the token is made


@pytest.mark.parametrize("damage", ["delete", "tamper"])
def test_missing_or_changed_file_means_a_new_token(tmp_path: Path, damage: str) -> None:
    store = MemoryStore()
    settings = Settings(data_dir=tmp_path / "data")
    resolve_admin_token(settings, store)
    path = tmp_path / "data" / TOKEN_FILE
    old = path.read_text().strip()
    if damage == "delete":
        path.unlink()
    else:
        path.write_text("attacker-chosen-token-value\n")
    verifier = resolve_admin_token(settings, store)
    new = path.read_text().strip()
    assert new not in (old, "attacker-chosen-token-value")
    assert accepts(verifier, new) and not accepts(verifier, old)
    assert not accepts(verifier, "attacker-chosen-token-value")


def test_environment_token_overrides_a_stored_one(tmp_path: Path) -> None:
    store = MemoryStore()
    generated_settings = Settings(data_dir=tmp_path / "data")
    resolve_admin_token(generated_settings, store)
    stored_token = (tmp_path / "data" / TOKEN_FILE).read_text().strip()
    verifier = resolve_admin_token(
        Settings(data_dir=tmp_path / "data", admin_token=ENV_TOKEN), store
    )
    assert accepts(verifier, ENV_TOKEN) and not accepts(verifier, stored_token)


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"Bearer",
        b"Bearer ",
        b"bearer wrong",
        b"Basic " + ENV_TOKEN.encode(),
        b"Token " + ENV_TOKEN.encode(),
        ENV_TOKEN.encode(),
    ],
)
def test_malformed_authorization_is_401(header: bytes | None) -> None:
    verifier = TokenVerifier(token_digest(ENV_TOKEN))
    with pytest.raises(ApiError) as caught:
        verifier.check(request_with(header))
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_scheme_is_case_insensitive() -> None:
    verifier = TokenVerifier(token_digest(ENV_TOKEN))
    verifier.check(request_with(b"bEaReR " + ENV_TOKEN.encode()))
