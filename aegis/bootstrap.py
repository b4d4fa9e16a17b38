"""Start-up work that must finish before the reactor runs: blocking, and allowed to be.

Opening the database, proving the master key, and (later) loading certificates into memory
happen here, so that by the time the listeners accept a connection everything the TLS
handshake needs is already in memory, and so that a bad key or a locked data directory
stops the process with one clear line instead of a half-started server.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from twisted.logger import Logger

from aegis.admin import TokenVerifier, listen_address, resolve_admin_token
from aegis.config import Settings
from aegis.crypto.keywrap import KeyWrapper
from aegis.crypto.masterkey import KeyMismatch, ResolvedKey, resolve_master_key, verify_master_key
from aegis.interfaces import IStore
from aegis.localca import (
    LocalAuthority,
    LocalCA,
    admin_certificate_names,
    proxy_certificate_names,
)
from aegis.store._runner import Runner
from aegis.store.errors import StoreError
from aegis.store.sqlite import SQLiteStore, ensure_private_directory

if TYPE_CHECKING:
    from aegis.store.postgres import PostgresStore

log = Logger()

LOCK_FILE = "aegis.lock"


class StartupError(Exception):
    """Aegis cannot start; ``str()`` is one line for the operator (exit status 2)."""


@dataclass
class Storage:
    store: SQLiteStore | PostgresStore
    wrapper: KeyWrapper
    key: ResolvedKey
    lock: IO[bytes]

    def close(self) -> None:
        self.store.close()
        self.lock.close()


def acquire_instance_lock(data_dir: Path) -> IO[bytes]:
    """Hold an exclusive lock on the data directory for this process's lifetime.

    Two processes writing one SQLite database with separate in-memory views would each
    serve stale state, and ``aegis rotate-key`` must not run under a live server.
    """
    ensure_private_directory(data_dir)
    handle = open(data_dir / LOCK_FILE, "a+b")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StartupError(
            f"another Aegis process is using the data directory {data_dir}; stop it first"
        ) from None
    os.chmod(data_dir / LOCK_FILE, 0o600)
    return handle


def open_database(settings: Settings, runner: Runner) -> SQLiteStore | PostgresStore:
    """The configured database, opened without migrating: PostgreSQL when
    ``AEGIS_DATABASE_URL`` is set, else the SQLite file in the data directory."""
    if settings.database_url is None:
        return SQLiteStore.open(settings.database_path, runner, migrate=False)
    from aegis.store.postgres import PostgresStore

    return PostgresStore.open(settings.database_url, runner, migrate=False)


def database_description(settings: Settings) -> str:
    """Where the data lives, for messages (never a password)."""
    if settings.database_url is None:
        return str(settings.database_path)
    from aegis.store.postgres import describe

    return f"PostgreSQL {describe(settings.database_url)}"


def open_storage(settings: Settings, runner: Runner) -> Storage:
    """Open the database and prove the master key before writing anything.

    The data-directory lock is taken with PostgreSQL too: the directory still holds this
    node's local files (admin token, local CA, caches).

    @raise StartupError: wrong or missing key, newer schema, unreadable database, or
        another process holding the data directory.
    """
    lock = acquire_instance_lock(settings.data_dir)
    store: SQLiteStore | PostgresStore | None = None
    try:
        store = open_database(settings, runner)
        if store.schema_version() >= 1:
            store.transact_blocking(lambda txn: verify_master_key(txn, settings.ssl_key))
        store.migrate()
        resolved = store.transact_blocking(
            lambda txn: resolve_master_key(txn, settings.ssl_key)
        )
    except (KeyMismatch, StoreError) as exc:
        if store is not None:
            store.close()
        lock.close()
        raise StartupError(str(exc)) from None
    if resolved.generated:
        log.warn(
            "AEGIS_SSL_KEY is not set: generated a master key and stored it in the settings "
            "table of {database}, next to the data it protects. To keep it apart: stop Aegis, "
            "run `AEGIS_SSL_NEW_KEY=$(aegis generate-key) aegis rotate-key`, and start Aegis "
            "with AEGIS_SSL_KEY set to that key.",
            database=database_description(settings),
        )
    elif resolved.stored_in_database and settings.ssl_key is not None:
        log.warn("AEGIS_SSL_KEY is set, and a copy of it is still stored in the database; "
                 "`aegis rotate-key` with AEGIS_SSL_NEW_KEY set removes the stored copy.")
    return Storage(store, KeyWrapper(resolved.key), resolved, lock)


@dataclass(frozen=True)
class LocalStartup:
    """The local CA with both leaves checked and current, and the admin token verifier."""

    local_ca: LocalCA
    authority: LocalAuthority
    verifier: TokenVerifier
    admin_names: tuple[str, ...]


def prepare_local_ca(settings: Settings, store: IStore, now: datetime) -> LocalStartup:
    """Apply the local CA renewal rules and resolve the admin token (blocking).

    The proxy fallback covers every name of every stored proxy host; the admin certificate
    the loopback names and the admin bind address.

    @raise StartupError: the cache or data directory cannot be written.
    """
    interface, _ = listen_address(settings.admin_listen)
    host_names = store.transact_blocking(
        lambda txn: [name for host in txn.list_hosts() for name in host.names]
    )
    local_ca = LocalCA(settings.ssl_cache_dir)
    admin_names = admin_certificate_names(interface)
    try:
        authority = local_ca.ensure(admin_names, proxy_certificate_names(host_names), now)
        verifier = resolve_admin_token(settings, store)
    except OSError as exc:
        raise StartupError(
            f"cannot write the local CA or admin token files: {exc.strerror} "
            f"({exc.filename})"
        ) from None
    if authority.written:
        log.info("local CA in {directory}: wrote {files}",
                 directory=str(settings.ssl_cache_dir), files=", ".join(authority.written))
    return LocalStartup(local_ca, authority, verifier, admin_names)
