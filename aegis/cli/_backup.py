"""``aegis backup FILE``: a consistent copy of the live database, keys still sealed.

The copy is SQLite's online backup API (``sqlite3.Connection.backup``) run page by page
while the server keeps writing. Normally a write by another process restarts such a
backup at its next step, which under steady writes may never finish; here the source
connection first opens a read transaction and holds it for the whole copy, so every step
reads the same WAL snapshot: the copy is exactly the database as of that instant, the
server's writers are never blocked (WAL readers do not block writers), and nothing restarts.
The manifest's counts and key check are read inside the same snapshot.

The copy is a file-format copy, so private keys stay sealed exactly as stored. When the
master key itself sits in the database (``AEGIS_SSL_KEY`` unset), it is in the backup too:
the command says so, and the file is written 0600.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from twisted.python import usage

from aegis import __version__
from aegis.cli._archive import DATABASE, FORMAT, FORMAT_VERSION, file_digest, write_backup
from aegis.cli._client import CommandFailed
from aegis.cli._command import LocalCommand
from aegis.config import ConfigError, Settings
from aegis.crypto.masterkey import CHECK_SETTING, STORED_KEY_SETTING
from aegis.timefmt import to_text, utcnow

PAGES_PER_STEP = 1024
COUNTED_TABLES = ("hosts", "certificates")


class Progress:
    """``copied N/M pages (P%)`` on stderr: rewritten in place on a terminal, else a line
    each 10% so logs of scheduled backups stay short."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if self.tty:
            self.stream.write(f"\r{self.what}: {done}/{total} pages ({percent}%)")
            if done >= total:
                self.stream.write("\n")
        elif percent // 10 > self._shown or done >= total:
            if done >= total and self._shown == 100:
                return
            self._shown = 100 if done >= total else percent // 10
            self.stream.write(f"{self.what}: {done}/{total} pages ({percent}%)\n")
        self.stream.flush()


def settings_for(options: dict[str, str | None]) -> Settings:
    try:
        return Settings.load(options)
    except ConfigError as exc:
        raise CommandFailed(str(exc), status=2) from None


def _snapshot_facts(db: sqlite3.Connection) -> dict[str, Any]:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    settings: dict[str, str] = {}
    if "settings" in tables:
        settings = {row[0]: row[1] for row in db.execute(
            "SELECT name, value FROM settings WHERE name IN (?, ?)",
            (CHECK_SETTING, STORED_KEY_SETTING))}
    return {
        "schema_version": int(db.execute("PRAGMA user_version").fetchone()[0]),
        "key_check": settings.get(CHECK_SETTING),
        "master_key_included": STORED_KEY_SETTING in settings,
        "counts": {table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - fixed names
                   if table in tables else 0 for table in COUNTED_TABLES},
    }


def copy_database(source: Path, target: Path, progress: Callable[[int, int], None],
                  pages_per_step: int = PAGES_PER_STEP) -> dict[str, Any]:
    """Copy ``source`` to the new file ``target`` from one snapshot; return its facts."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=10,
                              isolation_level=None)
    except sqlite3.Error as exc:
        raise CommandFailed(f"cannot open the database {source}: {exc}") from None
    try:
        dst = sqlite3.connect(str(target), isolation_level=None)
        try:
            src.execute("BEGIN")  # a read transaction: one snapshot for every step below
            facts = _snapshot_facts(src)
            src.backup(dst, pages=pages_per_step, sleep=0,
                       progress=lambda _status, remaining, total: progress(
                           total - remaining, total))
            src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise CommandFailed(f"the backup of {source} failed: {exc}") from None
    finally:
        src.close()
    if verdict != "ok":
        raise CommandFailed(f"the copy of {source} fails its integrity check: {verdict}")
    return facts


class BackupCommand(LocalCommand):
    synopsis = "FILE [--data-dir DIR]"
    longdesc = ("Write a consistent copy of the database (certificates with their keys "
                "still sealed, hosts, settings) and a manifest to FILE (a .tar.gz), while "
                "Aegis runs or not. See docs/backup.md.")
    arguments = ("out",)
    optParameters = [
        ["data-dir", None, None, "Directory of aegis.db [env AEGIS_DATA_DIR; default: data]"],
        ["step-pages", None, str(PAGES_PER_STEP), "Database pages copied per step (progress "
         "is shown after each)"],
    ]

    def postOptions(self) -> None:
        step = str(self["step-pages"])
        if not step.isdigit() or not 1 <= int(step) <= 1_000_000:
            raise usage.UsageError("--step-pages takes a number of pages, 1 to 1000000")
        self["step-pages"] = int(step)

    def execute(self) -> int:
        settings = settings_for({"data_dir": self["data-dir"]})
        database, out = settings.database_path, Path(self["out"])
        if not database.is_file():
            raise CommandFailed(f"no database at {database} (see --data-dir)")
        if not out.parent.is_dir():
            raise CommandFailed(f"cannot write {out}: no directory {out.parent}")
        try:
            manifest = self._write(database, out)
        except OSError as exc:
            raise CommandFailed(f"cannot write {out}: {exc.strerror or exc}") from None
        counts = manifest["counts"]
        print(f"wrote {out}: {counts['hosts']} host(s), {counts['certificates']} "
              f"certificate(s), schema version {manifest['schema_version']}, "
              f"{manifest['database']['bytes']} bytes")
        if manifest["master_key_included"]:
            print("note: the master key is stored in this database (AEGIS_SSL_KEY unset), so "
                  "this backup opens without it: keep the file as safe as the key itself.")
        else:
            print("restoring it needs the master key (AEGIS_SSL_KEY) this database uses.")
        return 0

    def _write(self, database: Path, out: Path) -> dict[str, Any]:
        """Copy, describe and archive; the work file lives beside ``out`` until renamed."""
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".aegis-backup-") as work:
            copy = Path(work) / DATABASE
            created = to_text(utcnow())
            facts = copy_database(database, copy, Progress("backup"), self["step-pages"])
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "aegis_version": __version__, "created_at": created, **facts,
                "database": {"file": DATABASE, "bytes": copy.stat().st_size,
                             "sha256": file_digest(copy)},
            }
            write_backup(out, manifest, copy)
        return manifest
