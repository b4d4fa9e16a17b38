"""What only the SQLite store has: files, modes, locking, threads, crash consistency."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytest_twisted

from aegis.store._runner import StoreThread, immediate_runner
from aegis.store.errors import SchemaTooNew, StoreBusy, StoreFull
from aegis.store.sqlite import SQLiteStore
from tests.helpers import certificate_fields, fill_database


def test_files_are_private_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "data" / "aegis.db"
    store = SQLiteStore.open(path, immediate_runner)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        db.close()
    finally:
        store.close()


def test_existing_directory_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    SQLiteStore.open(data / "aegis.db", immediate_runner).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_busy_database_raises_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "aegis.db"
    store = SQLiteStore.open(path, immediate_runner, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusy):
            store.transact_blocking(lambda t: t.set_setting("a", "b"))
        assert time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.transact_blocking(lambda t: t.set_setting("a", "b"))
    store.close()


def test_newer_schema_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "aegis.db"
    SQLiteStore.open(path, immediate_runner).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew):
        SQLiteStore.open(path, immediate_runner)
    assert path.read_bytes() == before


def test_foreign_keys_enforced_by_database(tmp_path: Path) -> None:
    path = tmp_path / "aegis.db"
    SQLiteStore.open(path, immediate_runner).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO host_names (name, host_id) VALUES ('x', 12345)")
    db.close()


def test_full_disk_is_store_full_and_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore.open(tmp_path / "aegis.db", immediate_runner)
    try:
        kept = store.transact_blocking(lambda txn: txn.add_certificate(certificate_fields()))
        fill_database(store)
        big = certificate_fields(domains=("big.example.com",), sealed=b"\x01" * 2_000_000)
        with pytest.raises(StoreFull) as caught:
            store.transact_blocking(lambda txn: (txn.set_setting("marker", "x"),
                                                 txn.add_certificate(big)))
        assert "full" in str(caught.value) and "nothing was changed" in str(caught.value)
        # rolled back as a whole: the setting written before the failing insert is gone too
        assert store.transact_blocking(lambda txn: txn.get_setting("marker")) is None
        records = store.transact_blocking(lambda txn: txn.list_certificates())
        assert [r.id for r in records] == [kept.id]
        # and the store still works once there is room again
        store.transact_blocking(lambda txn: txn._db.execute(  # type: ignore[attr-defined]
            "PRAGMA max_page_count = 1073741823"))
        store.transact_blocking(lambda txn: txn.add_certificate(big))
    finally:
        store.close()


@pytest_twisted.inlineCallbacks
def test_transact_runs_on_store_thread(tmp_path: Path) -> object:
    import threading

    from twisted.internet import reactor

    thread = StoreThread(reactor)
    thread.startService()
    store = SQLiteStore.open(tmp_path / "aegis.db", thread.runner())
    try:
        seen = yield store.transact(lambda t: threading.current_thread().name)
        assert seen != threading.current_thread().name
        record = yield store.transact(lambda t: t.add_certificate(certificate_fields()))
        assert record.id == 1
    finally:
        thread.stopService()
        store.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from aegis.store._runner import immediate_runner
    from aegis.store.sqlite import SQLiteStore
    from tests.helpers import certificate_fields, host_fields

    from aegis.certs import sources
    sources.load_sources()  # the store checks sources against the registry: import it first
    store = SQLiteStore.open(Path(sys.argv[1]), immediate_runner)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        def work(txn, n=n):
            # Several rows in one transaction: a certificate, a host bound to it, and a
            # counter that must always equal the number of certificates.
            cert = txn.add_certificate(certificate_fields((f"h{n}.example.com",)))
            txn.add_host(host_fields(f"h{n}.example.com", ssl_mode="custom", ssl_cert_id=cert.id))
            txn.set_setting("count", str(len(txn.list_certificates())))
        store.transact_blocking(work)
    """
)


@pytest.mark.slow
def test_sigkill_mid_transaction_keeps_database_consistent(tmp_path: Path) -> None:
    path = tmp_path / "data" / "aegis.db"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    previous = 0
    for round_number in range(12):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, cwd=root
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.02 * round_number)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        store = SQLiteStore.open(path, immediate_runner)
        try:
            certificates = store.transact_blocking(lambda t: t.list_certificates())
            hosts = store.transact_blocking(lambda t: t.list_hosts())
            count = store.transact_blocking(lambda t: t.get_setting("count"))
            assert int(count or 0) == len(certificates) == len(hosts)
            assert {h.ssl_cert_id for h in hosts} == {c.id for c in certificates}
            assert len(certificates) >= previous
            previous = len(certificates)
            db = sqlite3.connect(path)
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            db.close()
        finally:
            store.close()
    assert previous > 0
