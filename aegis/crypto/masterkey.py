"""Which master key protects this database, checked before anything is written.

The rules (the spec's "Private Key Encryption" section, made safe):

* ``AEGIS_SSL_KEY`` set: it must open the stored key-check value, else start-up stops with
  "AEGIS_SSL_KEY does not match this database" and nothing is written.
* unset, first run: a key is generated and stored in the ``settings`` table with its check
  value; a warning says the key now lives beside the data and how to move it out.
* unset, but the database was set up with a key from the environment: refuse, rather than
  silently generating a second key that cannot open the first one's data.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.crypto.sealed import (
    SEALED_CREDENTIALS,
    certificate_credentials_context,
    certificate_key_context,
    pending_order_key_context,
    setting_context,
)
from aegis.interfaces import IStoreTransaction

STORED_KEY_SETTING = "ssl_key"
CHECK_SETTING = "ssl_key_check"


class KeyMismatch(Exception):
    """The master key cannot open this database's data."""


@dataclass(frozen=True)
class ResolvedKey:
    key: MasterKey
    generated: bool  # True: created just now and stored in the database
    stored_in_database: bool


def verify_master_key(txn: IStoreTransaction, env_key: MasterKey | None) -> None:
    """Read-only check: raise :class:`KeyMismatch` if ``env_key`` (or the stored key) does not
    open the stored check value. Safe on a database that has no check value yet."""
    check = txn.get_setting(CHECK_SETTING)
    stored = txn.get_setting(STORED_KEY_SETTING)
    if check is None:
        return
    blob = base64.b64decode(check)
    if env_key is not None:
        if not KeyWrapper(env_key).matches_check_value(blob):
            raise KeyMismatch("AEGIS_SSL_KEY does not match this database")
        return
    if stored is None:
        raise KeyMismatch(
            "this database was set up with AEGIS_SSL_KEY from the environment; set it again"
        )
    if not KeyWrapper(MasterKey.from_hex(stored)).matches_check_value(blob):
        raise KeyMismatch("the master key stored in this database does not match its data")


def resolve_master_key(txn: IStoreTransaction, env_key: MasterKey | None) -> ResolvedKey:
    """Return the master key for this database, storing what a first run needs."""
    verify_master_key(txn, env_key)
    stored = txn.get_setting(STORED_KEY_SETTING)
    has_check = txn.get_setting(CHECK_SETTING) is not None
    if env_key is not None:
        if not has_check:
            txn.set_setting(CHECK_SETTING, _encode(KeyWrapper(env_key).check_value()))
        return ResolvedKey(env_key, generated=False, stored_in_database=stored is not None)
    if stored is not None:
        return ResolvedKey(MasterKey.from_hex(stored), generated=False, stored_in_database=True)
    key = MasterKey.generate()
    txn.set_setting(STORED_KEY_SETTING, key.hex())
    txn.set_setting(CHECK_SETTING, _encode(KeyWrapper(key).check_value()))
    return ResolvedKey(key, generated=True, stored_in_database=True)


def rotate_master_key(
    txn: IStoreTransaction, old: MasterKey, new: MasterKey, store_new_key: bool
) -> int:
    """Re-seal every sealed secret under ``new`` in the caller's transaction.

    Returns how many secrets were re-sealed. Any failure raises and the transaction rolls
    back, leaving every secret under ``old``.
    """
    old_wrapper, new_wrapper = KeyWrapper(old), KeyWrapper(new)
    count = 0
    for record in txn.list_certificates():
        context = certificate_key_context(record.uid)
        plaintext = old_wrapper.open(record.key_sealed, context)
        resealed = replace(record.fields(), key_sealed=new_wrapper.seal(plaintext, context))
        credentials = record.extra.get(SEALED_CREDENTIALS)
        if isinstance(credentials, str):
            context = certificate_credentials_context(record.uid)
            plaintext = old_wrapper.open(base64.b64decode(credentials), context)
            resealed = replace(resealed, extra={
                **record.extra, SEALED_CREDENTIALS: _encode(new_wrapper.seal(plaintext, context))})
            count += 1
        txn.replace_certificate(record.id, resealed)
        count += 1
    for state in txn.list_issuance_states():
        if state.pending_key_sealed is not None:
            context = pending_order_key_context(state.name)
            plaintext = old_wrapper.open(state.pending_key_sealed, context)
            txn.put_issuance_state(
                replace(state, pending_key_sealed=new_wrapper.seal(plaintext, context))
            )
            count += 1
    for name in sorted(SEALED_SETTINGS):
        value = txn.get_setting(name)
        if value is not None:
            context = setting_context(name)
            plaintext = old_wrapper.open(base64.b64decode(value), context)
            txn.set_setting(name, _encode(new_wrapper.seal(plaintext, context)))
            count += 1
    txn.set_setting(CHECK_SETTING, _encode(new_wrapper.check_value()))
    if store_new_key:
        txn.set_setting(STORED_KEY_SETTING, new.hex())
    else:
        txn.delete_setting(STORED_KEY_SETTING)
    return count


# Settings whose values are sealed blobs (see aegis.crypto.sealed.seal_setting). Features
# that keep a secret in settings (ACME account key, API credentials) add its name here so
# that ``aegis rotate-key`` re-seals it too.
SEALED_SETTINGS: frozenset[str] = frozenset({"acme_account_key"})


def _encode(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")
