"""What only the PostgreSQL store has: the schema twin of SQLite's, migrating once under
concurrent starts, serialisation retries, and a server that goes away (real server)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from aegis.store._runner import immediate_runner
from aegis.store.errors import (
    SchemaTooNew,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from aegis.store.migrations import LATEST_VERSION as SQLITE_LATEST
from aegis.store.pg_migrations import LATEST_VERSION
from aegis.store.postgres import PostgresStore, check_url, describe, store_error
from aegis.store.sqlite import SQLiteStore
from aegis.testing.ports import free_port
from aegis.testing.postgres import PostgresCluster
from tests.helpers import host_fields


def _sqlite_columns(path: Path) -> dict[str, list[tuple[str, bool]]]:
    db = sqlite3.connect(path)
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    found = {
        table: sorted((row[1], bool(row[3]) or bool(row[5]))
                      for row in db.execute(f"PRAGMA table_info({table})"))
        for table in tables
    }
    db.close()
    return found


def _postgres_columns(url: str) -> dict[str, list[tuple[str, bool]]]:
    found: dict[str, list[tuple[str, bool]]] = {}
    with psycopg.connect(url) as db:
        for table, column, nullable in db.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> 'aegis_schema'"
        ):
            found.setdefault(table, []).append((column, nullable == "NO"))
    return {table: sorted(columns) for table, columns in found.items()}


def test_schema_is_the_twin_of_sqlites(tmp_path: Path, postgres_url: str) -> None:
    """Same versions, tables, columns and NOT NULLs: a SQLite migration without its
    PostgreSQL twin fails here (see aegis/store/pg_migrations.py)."""
    assert LATEST_VERSION == SQLITE_LATEST
    SQLiteStore.open(tmp_path / "aegis.db", immediate_runner).close()
    PostgresStore.open(postgres_url, immediate_runner).close()
    assert _postgres_columns(postgres_url) == _sqlite_columns(tmp_path / "aegis.db")


def test_concurrent_starts_migrate_once(postgres_url: str) -> None:
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []
    start = threading.Barrier(3)

    def open_store() -> None:
        start.wait()
        try:
            opened.append(PostgresStore.open(postgres_url, immediate_runner))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert [store.schema_version() for store in opened] == [LATEST_VERSION] * 3
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT count(*) FROM aegis_schema").fetchone() == (1,)
    for store in opened:
        store.close()


def _write_behind_its_back(url: str, value: str) -> None:
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("UPDATE settings SET value = %s WHERE name = 'n'", (value,))


def test_serialization_failure_is_retried(postgres_url: str) -> None:
    store = PostgresStore.open(postgres_url, immediate_runner)
    store.transact_blocking(lambda t: t.set_setting("n", "0"))
    calls: list[int] = []

    def increment(txn: Any) -> str:
        value = int(txn.get_setting("n"))
        if not calls:  # another node commits between our read and our write
            _write_behind_its_back(postgres_url, "10")
        calls.append(value)
        txn.set_setting("n", str(value + 1))
        return str(value + 1)

    before = store.attempts_made
    assert store.transact_blocking(increment) == "11"
    assert calls == [0, 10]
    assert store.attempts_made - before == 2
    assert store.transact_blocking(lambda t: t.get_setting("n")) == "11"
    store.close()


def test_retries_are_bounded(postgres_url: str) -> None:
    store = PostgresStore.open(postgres_url, immediate_runner)
    store.transact_blocking(lambda t: t.set_setting("n", "0"))

    def always_overtaken(txn: Any) -> None:
        value = txn.get_setting("n")
        _write_behind_its_back(postgres_url, value + "x")
        txn.set_setting("n", "mine")

    before = store.attempts_made
    with pytest.raises(StoreBusy):
        store.transact_blocking(always_overtaken)
    assert store.attempts_made - before == 5
    assert store.transact_blocking(lambda t: t.get_setting("n")) == "0xxxxx"
    store.close()


def test_two_writers_one_name_one_wins(postgres_url: str) -> None:
    """Two nodes adding the same hostname at once: exactly one host, the other a Conflict
    (after a retry) rather than a duplicate or a 500."""
    first = PostgresStore.open(postgres_url, immediate_runner)
    second = PostgresStore.open(postgres_url, immediate_runner)
    both_read = threading.Barrier(2)
    results: list[str] = []

    def add(store: PostgresStore) -> None:
        first_attempt = [True]

        def work(txn: Any) -> None:
            txn.list_hosts()
            if first_attempt.pop() if first_attempt else False:
                both_read.wait(10)  # both have looked, neither has written
            txn.add_host(host_fields("same.example.com"))
        try:
            store.transact_blocking(work)
            results.append("added")
        except Exception as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=add, args=(store,)) for store in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["Conflict", "added"]
    assert len(first.transact_blocking(lambda t: t.list_hosts())) == 1
    first.close()
    second.close()


def test_lost_connection_is_unavailable_then_recovers(postgres_url: str) -> None:
    store = PostgresStore.open(postgres_url, immediate_runner)

    def killed_midway(txn: Any) -> None:
        txn.set_setting("a", "1")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'aegis' AND pid <> pg_backend_pid()"
            )
        txn.set_setting("b", "2")

    with pytest.raises(StoreUnavailable):
        store.transact_blocking(killed_midway)
    assert store.transact_blocking(lambda t: (t.get_setting("a"), t.get_setting("b"))) == (
        None, None)
    store.close()


def test_server_away_is_unavailable_and_quick(postgres_url: str,
                                              postgres_cluster: PostgresCluster) -> None:
    store = PostgresStore.open(postgres_url, immediate_runner, wait_timeout=1.0)
    store.transact_blocking(lambda t: t.set_setting("kept", "yes"))
    postgres_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.transact_blocking(lambda t: t.set_setting("lost", "no"))
        assert time.monotonic() - started < 5
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert store.transact_blocking(lambda t: t.get_setting("kept")) == "yes"
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not reconnect"
            time.sleep(0.2)
    store.close()


def test_nothing_listening_refused_at_open() -> None:
    url = f"postgresql://aegis@127.0.0.1:{free_port()}/aegis"
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore.open(url, immediate_runner, wait_timeout=0.5)
    assert describe(url) in str(caught.value)


def test_newer_schema_refused(postgres_url: str) -> None:
    PostgresStore.open(postgres_url, immediate_runner).close()
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE aegis_schema SET version = 99")
    with pytest.raises(SchemaTooNew):
        PostgresStore.open(postgres_url, immediate_runner)


def test_url_checks_never_echo_the_password() -> None:
    assert check_url("postgresql://u:pw@db.internal:6432/aegis")
    assert describe("postgresql://u:secret@db.internal:6432/aegis") == "db.internal:6432/aegis"
    for bad in ("mysql://u:secret@h/d", "postgresql://u:secret@h:notaport/d",
                "postgresql://u:secret@h/d?no_such_option=1"):
        with pytest.raises(ValueError) as caught:
            check_url(bad)
        assert "secret" not in str(caught.value)


_HOLD_A_WRITE = textwrap.dedent("""
    import sys, time
    from aegis.store._runner import immediate_runner
    from aegis.store.postgres import PostgresStore
    store = PostgresStore.open(sys.argv[1], immediate_runner)
    def half(txn):
        txn.set_setting("state", "new")
        txn.delete_host(txn.list_hosts()[0].id)
        print("written", flush=True)
        time.sleep(60)
    store.transact_blocking(half)
""")


def test_kill_9_mid_transaction_keeps_the_old_state(postgres_url: str) -> None:
    store = PostgresStore.open(postgres_url, immediate_runner)
    store.transact_blocking(lambda t: (t.set_setting("state", "old"),
                                       t.add_host(host_fields("kept.example.com"))))
    for _ in range(2):
        writer = subprocess.Popen([sys.executable, "-c", _HOLD_A_WRITE, postgres_url],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        assert store.transact_blocking(lambda t: (
            t.get_setting("state"), [h.domain for h in t.list_hosts()])) == (
            "old", ["kept.example.com"])
    # the killed session's locks are gone: a write goes through at once
    started = time.monotonic()
    store.transact_blocking(lambda t: t.set_setting("state", "later"))
    assert time.monotonic() - started < 2
    store.close()


def test_server_errors_map_to_store_errors() -> None:
    assert isinstance(store_error(pg_errors.DiskFull()), StoreFull)
    assert isinstance(store_error(pg_errors.LockNotAvailable()), StoreBusy)
    assert isinstance(store_error(pg_errors.AdminShutdown()), StoreUnavailable)
    other = store_error(pg_errors.UndefinedTable())
    assert type(other) is StoreError and "SQLSTATE 42P01" in str(other)
