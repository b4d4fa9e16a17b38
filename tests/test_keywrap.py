"""AES-256-GCM sealing and the master-key rules."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from aegis.crypto.keywrap import KeyWrapper, MasterKey, MasterKeyError, UnwrapError
from aegis.crypto.masterkey import (
    CHECK_SETTING,
    STORED_KEY_SETTING,
    KeyMismatch,
    resolve_master_key,
    rotate_master_key,
)
from aegis.crypto.sealed import (
    certificate_key_context,
    open_setting,
    pending_order_key_context,
    seal_setting,
)
from aegis.store.memory import MemoryStore
from aegis.store.records import IssuanceState
from tests.helpers import certificate_fields

SECRET = b"-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"


def test_seal_open_roundtrip_with_fresh_nonces() -> None:
    wrapper = KeyWrapper(MasterKey.generate())
    first = wrapper.seal(SECRET, "certificate:a:key")
    second = wrapper.seal(SECRET, "certificate:a:key")
    assert first != second  # a fresh nonce each time
    assert first[1:13] != second[1:13]
    assert SECRET not in first
    assert wrapper.open(first, "certificate:a:key") == SECRET


def test_context_binds_ciphertext_to_its_record() -> None:
    wrapper = KeyWrapper(MasterKey.generate())
    blob = wrapper.seal(SECRET, certificate_key_context("a"))
    with pytest.raises(UnwrapError) as caught:
        wrapper.open(blob, certificate_key_context("b"))
    assert "secret" not in str(caught.value)


def test_wrong_key_and_tampering_fail() -> None:
    blob = KeyWrapper(MasterKey.generate()).seal(SECRET, "c")
    with pytest.raises(UnwrapError):
        KeyWrapper(MasterKey.generate()).open(blob, "c")
    wrapper = KeyWrapper(MasterKey.generate())
    good = bytearray(wrapper.seal(SECRET, "c"))
    good[-1] ^= 1
    with pytest.raises(UnwrapError):
        wrapper.open(bytes(good), "c")
    with pytest.raises(UnwrapError):
        wrapper.open(b"\x02short", "c")


@pytest.mark.parametrize("text", ["", "abc", "g" * 64, "a" * 63, "a" * 65, "a" * 64 + "\n0"])
def test_malformed_master_key(text: str) -> None:
    with pytest.raises(MasterKeyError) as caught:
        MasterKey.from_hex(text)
    assert "64 hex characters" in str(caught.value)


def test_master_key_repr_hides_key() -> None:
    key = MasterKey.generate()
    assert key.hex() not in repr(key) and key.hex() not in str(key)
    assert MasterKey.from_hex(key.hex().upper()).same_as(key)


def test_first_run_generates_and_stores_key() -> None:
    store = MemoryStore()
    resolved = store.transact_blocking(lambda t: resolve_master_key(t, None))
    assert resolved.generated and resolved.stored_in_database
    again = store.transact_blocking(lambda t: resolve_master_key(t, None))
    assert not again.generated and again.key.same_as(resolved.key)


def test_environment_key_checked_against_database() -> None:
    store = MemoryStore()
    key = MasterKey.generate()
    store.transact_blocking(lambda t: resolve_master_key(t, key))
    assert store.transact_blocking(lambda t: t.get_setting(STORED_KEY_SETTING)) is None
    with pytest.raises(KeyMismatch, match="AEGIS_SSL_KEY does not match this database"):
        store.transact_blocking(lambda t: resolve_master_key(t, MasterKey.generate()))
    # forgetting the environment key is refused, not papered over with a new key
    with pytest.raises(KeyMismatch, match="set it again"):
        store.transact_blocking(lambda t: resolve_master_key(t, None))
    assert store.transact_blocking(lambda t: resolve_master_key(t, key)).key.same_as(key)


def test_rotation_reseals_everything_in_one_transaction() -> None:
    store = MemoryStore()
    old = MasterKey.generate()
    store.transact_blocking(lambda t: resolve_master_key(t, old))
    wrapper = KeyWrapper(old)
    fields = certificate_fields(uid="u1")
    fields = replace(fields, key_sealed=wrapper.seal(SECRET, certificate_key_context("u1")))
    cert = store.transact_blocking(lambda t: t.add_certificate(fields))
    store.transact_blocking(
        lambda t: t.set_setting("acme_account_key", seal_setting(wrapper, "acme_account_key",
                                                                  b"account"))
    )
    order_key = wrapper.seal(b"order key", pending_order_key_context("a.example.com"))
    store.transact_blocking(lambda t: t.put_issuance_state(
        IssuanceState(name="a.example.com", status="obtaining", pending_key_sealed=order_key)))
    new = MasterKey.generate()
    count = store.transact_blocking(lambda t: rotate_master_key(t, old, new, store_new_key=False))
    assert count == 3
    state = store.transact_blocking(lambda t: t.get_issuance_state("a.example.com"))
    assert state is not None and state.pending_key_sealed is not None
    assert KeyWrapper(new).open(
        state.pending_key_sealed, pending_order_key_context("a.example.com")) == b"order key"
    record = store.transact_blocking(lambda t: t.get_certificate(cert.id))
    assert KeyWrapper(new).open(record.key_sealed, certificate_key_context("u1")) == SECRET
    sealed = store.transact_blocking(lambda t: t.get_setting("acme_account_key"))
    assert sealed is not None
    assert open_setting(KeyWrapper(new), "acme_account_key", sealed) == b"account"
    check = store.transact_blocking(lambda t: t.get_setting(CHECK_SETTING))
    assert check is not None
    assert KeyWrapper(new).matches_check_value(base64.b64decode(check))
    with pytest.raises(KeyMismatch):
        store.transact_blocking(lambda t: resolve_master_key(t, old))


def test_rotation_with_a_corrupt_key_changes_nothing() -> None:
    store = MemoryStore()
    old = MasterKey.generate()
    store.transact_blocking(lambda t: resolve_master_key(t, old))
    good = replace(certificate_fields(uid="good"),
                   key_sealed=KeyWrapper(old).seal(SECRET, certificate_key_context("good")))
    store.transact_blocking(lambda t: t.add_certificate(good))
    store.transact_blocking(lambda t: t.add_certificate(certificate_fields(uid="bad")))
    with pytest.raises(UnwrapError):
        store.transact_blocking(
            lambda t: rotate_master_key(t, old, MasterKey.generate(), store_new_key=True)
        )
    assert store.transact_blocking(lambda t: resolve_master_key(t, old)).key.same_as(old)
