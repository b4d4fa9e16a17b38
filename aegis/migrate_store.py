"""``aegis migrate-store``: move a node's SQLite database into PostgreSQL.

Run it with Aegis stopped (it takes the data-directory lock, like ``aegis rotate-key``),
with the same ``AEGIS_SSL_KEY`` the node runs with (or none, when the key is stored in the
database: it is copied along). The copy itself is :mod:`aegis.store.copy`.
"""

from __future__ import annotations

from twisted.python import usage

from aegis.config import ConfigError, Settings


class MigrateStoreOptions(usage.Options):
    synopsis = "[--data-dir DIR] [--database-url URL] [--force]"
    longdesc = (
        "Copy the SQLite database of the data directory into the PostgreSQL database of "
        "AEGIS_DATABASE_URL: every row, ids kept, private keys still sealed under the same "
        "master key (AEGIS_SSL_KEY, or the one stored in the database). Stop Aegis first. "
        "A PostgreSQL database that holds data is refused unless --force (which replaces "
        "its contents). Then start Aegis with AEGIS_DATABASE_URL set."
    )
    optParameters = [
        ["data-dir", None, None, "Directory of aegis.db [env AEGIS_DATA_DIR; default: data]"],
        ["database-url", None, None, "postgresql:// URL of the target [env AEGIS_DATABASE_URL]"],
    ]
    optFlags = [["force", None, "Replace the contents of a non-empty target."]]


def migrate_store(options: MigrateStoreOptions) -> int:
    """The command; one line and exit status 2 on any refusal."""
    from aegis.bootstrap import StartupError, acquire_instance_lock
    from aegis.crypto.masterkey import KeyMismatch, verify_master_key
    from aegis.store._runner import immediate_runner
    from aegis.store.copy import copy_database
    from aegis.store.errors import StoreError
    from aegis.store.postgres import PostgresStore, describe
    from aegis.store.sqlite import SQLiteStore
    from aegis.tap import exit_with_error

    try:
        settings = Settings.load({"data_dir": options["data-dir"],
                                  "database_url": options["database-url"]})
    except ConfigError as exc:
        exit_with_error(str(exc))
    if settings.database_url is None:
        exit_with_error("set AEGIS_DATABASE_URL (or --database-url) to the PostgreSQL target")
    if not settings.database_path.exists():
        exit_with_error(f"no database at {settings.database_path}")
    try:
        lock = acquire_instance_lock(settings.data_dir)
    except StartupError as exc:
        exit_with_error(str(exc))
    try:
        source = SQLiteStore.open(settings.database_path, immediate_runner, migrate=False)
        try:
            source.transact_blocking(lambda txn: verify_master_key(txn, settings.ssl_key))
            source.migrate()
            target = PostgresStore.open(settings.database_url, immediate_runner)
            try:
                report = copy_database(source, target, force=options["force"])
                target.transact_blocking(lambda txn: verify_master_key(txn, settings.ssl_key))
            finally:
                target.close()
        finally:
            source.close()
    except (KeyMismatch, StoreError) as exc:
        exit_with_error(str(exc))
    finally:
        lock.close()
    counted = ", ".join(f"{table} {count}" for table, count in report.counts.items())
    print(f"copied {settings.database_path} into PostgreSQL {describe(settings.database_url)}: "
          f"{counted}.")
    print("start Aegis with AEGIS_DATABASE_URL set (and the same AEGIS_SSL_KEY).")
    return 0
