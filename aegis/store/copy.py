"""Copy an SQLite database into PostgreSQL (``aegis migrate-store``).

Why rows are copied verbatim instead of through the record methods:

* **Keys stay sealed.** ``key_sealed`` and every sealed setting travel as the same bytes;
  nothing is decrypted, so the target needs (and checks) the same master key.
* **Ids are kept**, so host bindings (``ssl_cert_id``), issuance state and anything outside
  that names a certificate or host by id hold. The identity sequences then continue after
  SQLite's high-water mark (``sqlite_sequence``), so an id deleted before the copy is not
  handed out again.
* **Timestamps and everything else** are the same text: both stores use one stored form.

The copy is one PostgreSQL transaction: it lands whole or not at all. Both databases must be
at the same schema version (opening them migrates both to the latest). A target holding
any row is refused unless ``force``, which empties it in that same transaction. Afterwards
every table is counted again in a fresh transaction and compared with the source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aegis.interfaces import IStoreTransaction
from aegis.store._sql_txn import SQLTransaction
from aegis.store.errors import StoreError
from aegis.store.postgres import PostgresStore
from aegis.store.sqlite import SQLiteStore

# Parents before children (foreign keys); tables a later migration adds follow in name order.
ORDER = ("settings", "certificates", "hosts", "host_names", "issuance_state", "acme_challenges")
_IDENTITY_COLUMN = "id"


class CopyRefused(StoreError):
    """The copy cannot start (target not empty, schema versions differ); nothing changed."""


class CopyMismatch(StoreError):
    """After the copy, the target's counts differ from the source's."""


@dataclass(frozen=True)
class CopyReport:
    """Rows copied per table, in copy order."""

    counts: Mapping[str, int]


def _sql(txn: IStoreTransaction) -> SQLTransaction:
    if not isinstance(txn, SQLTransaction):
        raise TypeError("copying needs an SQL store")
    return txn


@dataclass(frozen=True)
class _Dump:
    rows: Mapping[str, Sequence[Mapping[str, Any]]]
    high_water: Mapping[str, int]  # sqlite_sequence: the highest id ever given per table


def _dump(txn: IStoreTransaction) -> _Dump:
    sql = _sql(txn)
    names = {row["name"] for row in sql.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()}
    tables = [*(name for name in ORDER if name in names), *sorted(names - set(ORDER))]
    rows = {
        table: [dict(row) for row in sql.execute(f"SELECT * FROM {table}").fetchall()]  # noqa: S608 # nosec B608
        for table in tables
    }
    high_water = {row["name"]: int(row["seq"]) for row in sql.execute(
        "SELECT name, seq FROM sqlite_sequence").fetchall()}
    return _Dump(rows, high_water)


def count_rows(txn: IStoreTransaction, tables: Sequence[str]) -> dict[str, int]:
    sql = _sql(txn)
    return {
        table: int(sql.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"])  # noqa: S608 # nosec B608
        for table in tables
    }


def _load(txn: IStoreTransaction, dump: _Dump, force: bool) -> None:
    sql = _sql(txn)
    tables = list(dump.rows)
    present = {row["table_name"] for row in sql.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema()").fetchall()}
    missing = [table for table in tables if table not in present]
    if missing:
        raise CopyRefused(f"the PostgreSQL database lacks table(s): {', '.join(missing)}")
    occupied = {table: n for table, n in count_rows(txn, tables).items() if n}
    if occupied and not force:
        listed = ", ".join(f"{table} ({n})" for table, n in occupied.items())
        raise CopyRefused(f"the PostgreSQL database is not empty: {listed}; "
                          "use --force to replace its contents")
    for table in reversed(tables):
        sql.execute(f"DELETE FROM {table}")  # noqa: S608 # nosec B608 # table names are constants
    for table, rows in dump.rows.items():
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" * len(row))
            sql.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608 # nosec B608 # table and column names are constants
                        list(row.values()))
        if _has_identity(sql, table):
            highest = max([dump.high_water.get(table, 0),
                           *(int(row[_IDENTITY_COLUMN]) for row in rows)])
            sql.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?, ?)",
                        (table, _IDENTITY_COLUMN, max(highest, 1), highest > 0))


def _has_identity(sql: SQLTransaction, table: str) -> bool:
    row = sql.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? AND column_name = ? AND is_identity = 'YES'",
        (table, _IDENTITY_COLUMN)).fetchone()
    return row is not None


def copy_database(source: SQLiteStore, target: PostgresStore, force: bool = False) -> CopyReport:
    """Copy every row of ``source`` into ``target``; see the module docstring.

    @raise CopyRefused: different schema versions, a table missing, or a non-empty target
        without ``force``; the target is unchanged.
    @raise CopyMismatch: the counts read back differ from the source's.
    """
    if source.schema_version() != target.schema_version():
        raise CopyRefused(
            f"schema versions differ: SQLite {source.schema_version()}, "
            f"PostgreSQL {target.schema_version()}"
        )
    dump = source.transact_blocking(_dump)
    target.transact_blocking(lambda txn: _load(txn, dump, force))
    expected = {table: len(rows) for table, rows in dump.rows.items()}
    found = target.transact_blocking(lambda txn: count_rows(txn, list(expected)))
    if found != expected:
        raise CopyMismatch(f"copied counts differ: expected {expected}, found {found}")
    return CopyReport(expected)
