"""The shared store: PostgreSQL through psycopg 3 and a psycopg_pool connection pool.

Several Aegis nodes (or worker processes) open the same database; this is what they share.
Why this shape:

* **Same SQL, same records.** Transactions are :class:`aegis.store._sql_txn.SQLTransaction`,
  the one SQLite uses, with the PostgreSQL :data:`POSTGRES` dialect; stored text forms are
  identical, so a record round-trips the same through either store.
* **SERIALIZABLE, retried.** Every transaction runs at ``SERIALIZABLE``: two nodes adding
  the same hostname at once cannot both succeed. A serialisation failure or deadlock is
  retried (the whole ``work`` runs again, so it must only talk to the transaction) a few
  times with a short jittered pause; still failing, :class:`StoreBusy`. A row lock held past
  ``lock_timeout`` (5 s, as SQLite's busy timeout) is StoreBusy as well.
* **The store thread.** ``transact`` runs on the store-owned thread like SQLite
  (:mod:`aegis.store._runner`); the reactor never waits on the network.
* **A small pool.** The store thread needs one connection; the pool holds a few more for
  start-up code and tools, checks a connection before handing it out, and replaces lost
  ones in the background. When the server is away, a transaction waits at most
  ``wait_timeout`` for a connection and fails with :class:`StoreUnavailable` (503); the
  in-memory views keep serving TLS meanwhile.
* **Migrations under an advisory lock**, so two nodes starting together migrate once
  (:mod:`aegis.store.pg_migrations`).

The change feed of issue 21 (``LISTEN``/``NOTIFY``) is meant to hang off this module: a
transaction can ``pg_notify`` through ``SQLTransaction.execute``, and a listener takes its
own dedicated connection (``connect``) rather than one of the pool's.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from aegis.interfaces import IStore, IStoreTransaction
from aegis.store._runner import Runner
from aegis.store._sql_txn import Dialect, SQLTransaction
from aegis.store.errors import SchemaTooNew, StoreBusy, StoreError, StoreFull, StoreUnavailable
from aegis.store.pg_migrations import LATEST_VERSION, MIGRATIONS
from aegis.timefmt import utcnow

T = TypeVar("T")
log = Logger()

POSTGRES = Dialect("postgresql", "%s", psycopg.IntegrityError)
MIGRATION_LOCK = 0x4165676973  # "Aegis": the advisory lock key held while migrating
DEFAULT_ATTEMPTS = 5
DEFAULT_WAIT_TIMEOUT = 3.0
_SESSION = (
    "SET lock_timeout = '5s'",
    # A node frozen in a transaction must not hold row locks for every other node forever.
    "SET idle_in_transaction_session_timeout = '60s'",
)


class Conflicting(StoreBusy):
    """A serialisation failure or deadlock: concurrent transactions collided. Retried by
    the store; a caller sees it (as StoreBusy) only once the retries are spent."""


def describe(url: str) -> str:
    """``host:port/database`` of a connection URL: for messages; never the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable database URL)"
    host = parts.get("host") or "localhost"
    return f"{host}:{parts.get('port') or 5432}/{parts.get('dbname') or parts.get('user') or ''}"


def check_url(url: str) -> str:
    """``url`` if it is a PostgreSQL connection URL libpq can parse.

    @raise ValueError: with a message that repeats no part of the URL (it may hold a
        password).
    """
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("is not a valid PostgreSQL connection URL") from None
    for port in str(parts.get("port") or "5432").split(","):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("has a port outside 1-65535")
    return url


def store_error(error: psycopg.Error) -> StoreError:
    """The store error for a psycopg error (the transaction is already undone).

    Messages carry the server's primary message and SQLSTATE, never its detail (which can
    quote row values) nor the SQL.
    """
    if isinstance(error, pg_errors.DiskFull):
        return StoreFull("the disk holding the database is full; nothing was changed")
    if isinstance(error, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return StoreBusy("the database is locked by another writer; retry")
    if isinstance(error, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return Conflicting("concurrent writers kept conflicting; retry")
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable("the database server cannot be reached; retry")
    primary = error.diag.message_primary or type(error).__name__
    return StoreError(f"database error: {primary} (SQLSTATE {error.sqlstate})")


class _PoolLogBridge(logging.Handler):
    """psycopg_pool reports through stdlib logging (with no handler set up, raw lines on
    stderr); route its records into Aegis's log instead, one event each."""

    def emit(self, record: logging.LogRecord) -> None:
        level = LogLevel.warn if record.levelno >= logging.WARNING else LogLevel.debug
        log.emit(level, "PostgreSQL pool: {message}", message=record.getMessage())


def _bridge_pool_log() -> None:
    pool_log = logging.getLogger("psycopg.pool")
    if not any(isinstance(handler, _PoolLogBridge) for handler in pool_log.handlers):
        pool_log.addHandler(_PoolLogBridge())
        pool_log.propagate = False


def _configure(connection: psycopg.Connection[Any]) -> None:
    for statement in _SESSION:
        connection.execute(statement)


def _rollback(connection: psycopg.Connection[Any]) -> None:
    if connection.broken or connection.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        connection.execute("ROLLBACK")
    except psycopg.Error:
        log.failure("ROLLBACK failed")


_CONNECTION: dict[str, Any] = {
    "autocommit": True, "row_factory": dict_row, "connect_timeout": 10,
    "application_name": "aegis",
}


def connect(url: str) -> psycopg.Connection[Any]:
    """A dedicated autocommit connection outside the pool (migrations, a future
    ``LISTEN`` session)."""
    return psycopg.connect(url, **_CONNECTION)


@implementer(IStore)
class PostgresStore:
    """:class:`aegis.interfaces.IStore` on a PostgreSQL database.

    Open with :meth:`open` (blocking: connects, checks the schema, migrates), then hand
    ``transact`` work from the reactor.
    """

    def __init__(
        self,
        url: str,
        pool: ConnectionPool[Any],
        runner: Runner,
        now: Callable[[], datetime] = utcnow,
        attempts: int = DEFAULT_ATTEMPTS,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> None:
        self.url = url
        self._pool: ConnectionPool[Any] | None = pool
        self._runner = runner
        self._now = now
        self._attempts = attempts
        self._wait_timeout = wait_timeout
        self.attempts_made = 0  # transaction attempts, retries included (tests, metrics)
        self._count_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        url: str,
        runner: Runner,
        now: Callable[[], datetime] = utcnow,
        migrate: bool = True,
        pool_size: int = 4,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    ) -> PostgresStore:
        """Connect to the database at ``url``.

        @param migrate: False opens the database without any write, so a caller can check
            it (e.g. the master key) before changing a byte.
        @raise StoreUnavailable: no connection within ``wait_timeout`` (plus connecting).
        @raise SchemaTooNew: the database was written by a newer Aegis.
        """
        _bridge_pool_log()
        pool: ConnectionPool[Any] = ConnectionPool(
            check_url(url), min_size=1, max_size=pool_size, open=False, name="aegis-store",
            kwargs=_CONNECTION,
            configure=_configure, check=ConnectionPool.check_connection,
            timeout=wait_timeout, reconnect_timeout=wait_timeout + 2,
        )
        try:
            pool.open(wait=True, timeout=wait_timeout + 2)
        except PoolTimeout:
            pool.close()
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {describe(url)}") from None
        store = cls(url, pool, runner, now, wait_timeout=wait_timeout)
        try:
            version = store.schema_version()
            if version > LATEST_VERSION:
                raise SchemaTooNew(
                    f"PostgreSQL database {describe(url)} has schema version {version}; "
                    f"this Aegis knows up to {LATEST_VERSION}"
                )
            if migrate:
                store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def _open_pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            raise StoreError("the store is closed")
        return self._pool

    def schema_version(self) -> int:
        def read(connection: psycopg.Connection[Any]) -> int:
            if connection.execute("SELECT to_regclass('aegis_schema')").fetchone() == {
                "to_regclass": None
            }:
                return 0
            row = connection.execute("SELECT version FROM aegis_schema").fetchone()
            return 0 if row is None else int(row["version"])

        return self._with_connection(read)

    def _with_connection(self, use: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``use`` on a pooled connection, store errors for psycopg ones."""
        try:
            connection = self._open_pool().getconn(timeout=self._wait_timeout)
        except PoolTimeout:
            raise StoreUnavailable("the database server cannot be reached; retry") from None
        try:
            return use(connection)
        except psycopg.Error as exc:
            _rollback(connection)
            raise store_error(exc) from None
        finally:
            self._open_pool().putconn(connection)

    def migrate(self) -> None:
        """Apply every pending migration, each in its own transaction, holding the
        migration advisory lock so that concurrent starts migrate once."""
        try:
            with connect(self.url) as connection:
                connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS aegis_schema (version INTEGER NOT NULL)"
                )
                row = connection.execute("SELECT version FROM aegis_schema").fetchone()
                version = 0 if row is None else int(row["version"])
                if row is None:
                    connection.execute("INSERT INTO aegis_schema (version) VALUES (0)")
                for step in range(version, LATEST_VERSION):
                    with connection.transaction():
                        connection.execute(MIGRATIONS[step])
                        connection.execute("UPDATE aegis_schema SET version = %s", (step + 1,))
                    log.info("PostgreSQL schema migrated to version {version}",
                             version=step + 1)
        except psycopg.Error as exc:
            raise store_error(exc) from None

    def transact_blocking(self, work: Callable[[IStoreTransaction], T]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                return self._with_connection(lambda connection: self._attempt(connection, work))
            except Conflicting:
                if attempt == self._attempts:
                    raise
            time.sleep(random.uniform(0.005, 0.02) * attempt)  # noqa: S311 - jitter only # nosec B311
        raise AssertionError("unreachable")

    def _attempt(
        self, connection: psycopg.Connection[Any], work: Callable[[IStoreTransaction], T]
    ) -> T:
        with self._count_lock:
            self.attempts_made += 1
        connection.execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        try:
            result = work(SQLTransaction(connection, POSTGRES, self._now))
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise
        return result

    def transact(self, work: Callable[[IStoreTransaction], T]) -> Deferred[T]:
        return self._runner(lambda: self.transact_blocking(work))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
