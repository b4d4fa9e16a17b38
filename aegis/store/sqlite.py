"""The embedded store: one SQLite file in WAL mode, worked on by one store-owned thread.

Why this shape:

* **One connection, one thread.** Every transaction runs on a single worker thread (the
  ``runner``), so transactions inside this process are serialised without lock contention
  and the reactor thread never waits on disk.
* **BEGIN IMMEDIATE.** A transaction takes the write lock when it starts, not half way, so
  two processes (Aegis and ``aegis rotate-key``) cannot deadlock on a lock upgrade. Waiting
  is bounded by the busy timeout; past it :class:`StoreBusy` tells the caller to retry.
* **WAL + synchronous=FULL + foreign keys.** Readers never block the writer, a commit is on
  disk before it is reported, and references are enforced by the database itself. A
  ``kill -9`` at any moment leaves the last committed state.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from aegis.interfaces import IStore, IStoreTransaction
from aegis.store._runner import Runner
from aegis.store._sql_txn import Dialect, SQLTransaction
from aegis.store.errors import SchemaTooNew, StoreBusy, StoreError, StoreFull
from aegis.store.migrations import LATEST_VERSION, MIGRATIONS
from aegis.timefmt import utcnow

T = TypeVar("T")
log = Logger()

DEFAULT_BUSY_TIMEOUT = 5.0
SQLITE = Dialect("sqlite", "?", sqlite3.IntegrityError)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _operational(error: sqlite3.OperationalError) -> StoreError:
    """The store error for an ``OperationalError`` (the transaction is already undone)."""
    if _is_busy(error):
        return StoreBusy("the database is locked by another writer; retry")
    if "full" in str(error).lower():  # SQLITE_FULL: "database or disk is full"
        return StoreFull("the disk holding the database is full; nothing was changed")
    return StoreError(f"database error: {error}")


def _rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction. SQLite has already rolled back by itself after some
    errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM): a second ROLLBACK would raise
    "no transaction is active" and hide the real error."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            log.failure("ROLLBACK failed")


def ensure_private_directory(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: it holds secrets."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


@implementer(IStore)
class SQLiteStore:
    """:class:`aegis.interfaces.IStore` on an SQLite file.

    Open with :meth:`open` (blocking: creates the file 0600, runs migrations), then hand
    ``transact`` work from the reactor. ``runner`` runs a callable on the store thread and
    returns a Deferred of its result (see :mod:`aegis.store._runner`).
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        runner: Runner,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db: sqlite3.Connection | None = connection
        self._runner = runner
        self._now = now
        # One connection serves every transaction; the lock keeps a transaction started on
        # another thread (start-up code, a tool) from interleaving with the store thread's.
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: Path,
        runner: Runner,
        now: Callable[[], datetime] = utcnow,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        migrate: bool = True,
    ) -> SQLiteStore:
        """Open (creating if needed) the database at ``path``.

        @param migrate: False opens an existing database without any write, so a caller can
            check it (e.g. the master key) before changing a byte.
        @raise SchemaTooNew: the file was written by a newer Aegis.
        @raise StoreError: the file is not a usable database.
        """
        ensure_private_directory(path.parent)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            connection = sqlite3.connect(
                str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = FULL")
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(connection, runner, now)
        version = store.schema_version()
        if version > LATEST_VERSION:
            store.close()
            raise SchemaTooNew(
                f"{path} has schema version {version}; this Aegis knows up to {LATEST_VERSION}"
            )
        if migrate:
            store.migrate()
        return store

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is closed")
        return self._db

    def schema_version(self) -> int:
        return int(self._connection().execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply every pending migration, each in its own transaction."""
        db = self._connection()
        for version in range(self.schema_version(), LATEST_VERSION):
            self._begin(db)
            try:
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(db)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {version + 1}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @staticmethod
    def _begin(db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StoreBusy("the database is locked by another writer; retry") from None
            raise StoreError(f"database error: {exc}") from None

    def transact_blocking(self, work: Callable[[IStoreTransaction], T]) -> T:
        with self._lock:
            return self._transact(work)

    def _transact(self, work: Callable[[IStoreTransaction], T]) -> T:
        db = self._connection()
        self._begin(db)
        try:
            result = work(SQLTransaction(db, SQLITE, self._now))
        except sqlite3.OperationalError as exc:
            _rollback(db)
            raise _operational(exc) from None
        except sqlite3.DatabaseError as exc:
            _rollback(db)
            raise StoreError(f"database error: {exc}") from None
        except BaseException:
            _rollback(db)
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            _rollback(db)
            raise _operational(exc) from None
        return result

    def transact(self, work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        return self._runner(lambda: self.transact_blocking(work))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
