"""``aegis restore FILE``: put a backup in place of a stopped instance's database.

Every check runs before anything in the data directory changes, and a refusal leaves it
exactly as it was (the work file lives in a temporary directory that is removed):

1. the archive is an ``aegis-backup`` whose ``aegis.db`` matches the manifest's size and
   SHA-256, passes ``PRAGMA integrity_check``, and has a schema this Aegis knows;
2. the master key: with ``--ssl-key``/``AEGIS_SSL_KEY`` given, that key must open the
   backup's key check (it is the key the restored server will run with); without one, the
   backup must hold its own stored key (it was made with ``AEGIS_SSL_KEY`` unset);
3. no server holds the data directory's lock (``aegis.lock``); the lock is then held by the
   restore itself until the new database is in place, so none can start half way.

Then the previous database is checkpointed (its WAL folded in) and kept as
``aegis.db.before-restore`` (``.2``, ``.3``... when that name is taken), and the restored file
is renamed into place: at any instant ``aegis.db`` is the old file or the new one.
"""

from __future__ import annotations

import base64
import binascii
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import IO, Any

from aegis.cli._archive import DATABASE, extract_database, read_manifest
from aegis.cli._backup import settings_for
from aegis.cli._client import CommandFailed
from aegis.cli._command import LocalCommand
from aegis.crypto.keywrap import KeyWrapper, MasterKey, MasterKeyError
from aegis.crypto.masterkey import CHECK_SETTING, STORED_KEY_SETTING
from aegis.store.migrations import LATEST_VERSION

KEPT_SUFFIX = ".before-restore"


def _refused(reason: str) -> CommandFailed:
    return CommandFailed(f"restore refused, nothing was changed: {reason}")


def _settings_of(database: Path) -> tuple[int, dict[str, str]]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise _refused(f"the backed-up database fails its integrity check: {verdict}")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        rows = db.execute("SELECT name, value FROM settings WHERE name IN (?, ?)",
                          (CHECK_SETTING, STORED_KEY_SETTING)).fetchall()
    except sqlite3.Error as exc:
        raise _refused(f"the backed-up database cannot be read: {exc}") from None
    finally:
        db.close()
    return version, {name: value for name, value in rows}


def check_key(stored: dict[str, str], manifest: dict[str, Any], key: MasterKey | None,
              origin: str) -> str:
    """Refuse unless the key the restored server will use opens this backup; say which."""
    check_text = stored.get(CHECK_SETTING)
    if check_text != manifest.get("key_check"):
        raise _refused("the database's key check differs from its manifest's (altered)")
    if check_text is None:
        return "the backup has no key check yet (no key was ever used)"
    try:
        check = base64.b64decode(check_text, validate=True)
    except (binascii.Error, ValueError):
        raise _refused("the backup's key check is not base64") from None
    if key is not None:
        if not KeyWrapper(key).matches_check_value(check):
            raise _refused(f"the master key in {origin} does not open this backup: it was "
                           "made under another key; give that one with --ssl-key or "
                           "AEGIS_SSL_KEY")
        return f"the master key in {origin} opens it: start Aegis with that AEGIS_SSL_KEY"
    stored_key = stored.get(STORED_KEY_SETTING)
    if stored_key is None:
        raise _refused("this backup's keys are sealed with a master key kept outside the "
                       "database (AEGIS_SSL_KEY); give it with --ssl-key or AEGIS_SSL_KEY")
    try:
        opens = KeyWrapper(MasterKey.from_hex(stored_key)).matches_check_value(check)
    except MasterKeyError:
        opens = False
    if not opens:
        raise _refused("the master key stored in the backup does not open its own data")
    return "its own stored master key opens it: start Aegis without AEGIS_SSL_KEY"


def _lock(data_dir: Path, always: bool = False) -> IO[bytes] | None:
    """Hold the data directory's lock, or refuse while a server holds it. A directory
    without a lock file has never had a server; it is locked once the checks passed."""
    from aegis.bootstrap import LOCK_FILE, StartupError, acquire_instance_lock

    if not always and not (data_dir / LOCK_FILE).exists():
        return None
    try:
        return acquire_instance_lock(data_dir)
    except StartupError:
        raise _refused(f"Aegis is running on {data_dir} (it holds {LOCK_FILE}); stop it "
                       "first") from None


def _kept_name(database: Path) -> Path:
    candidate = database.with_name(database.name + KEPT_SUFFIX)
    number = 2
    while any(Path(f"{candidate}{tail}").exists() for tail in ("", "-wal", "-shm")):
        candidate = database.with_name(f"{database.name}{KEPT_SUFFIX}.{number}")
        number += 1
    return candidate


def _set_aside(database: Path) -> Path | None:
    """Fold the old database's WAL into it and rename it (and any leftover -wal/-shm, so a
    stale WAL can never be applied to the restored file)."""
    if not database.exists():
        return None
    try:
        db = sqlite3.connect(str(database), isolation_level=None)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise _refused(f"the current database {database} cannot be checkpointed: {exc}") from None
    kept = _kept_name(database)
    os.replace(database, kept)
    for tail in ("-wal", "-shm"):
        leftover = Path(f"{database}{tail}")
        if leftover.exists():
            os.replace(leftover, Path(f"{kept}{tail}"))
    return kept


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RestoreCommand(LocalCommand):
    synopsis = "FILE [--data-dir DIR] [--ssl-key HEX]"
    longdesc = ("Replace the database of a stopped Aegis with a backup made by `aegis backup`. "
                "Refused, with nothing changed, while Aegis runs on the data directory or when "
                "the master key does not open the backup. The previous database is kept as "
                "aegis.db.before-restore. See docs/backup.md.")
    optParameters = [
        ["data-dir", None, None, "Directory of aegis.db [env AEGIS_DATA_DIR; default: data]"],
        ["ssl-key", None, None, "The master key (64 hex) the backup was made under "
         "[env AEGIS_SSL_KEY; prefer the environment: command lines show in ps]"],
    ]
    arguments = ("backup",)

    def execute(self) -> int:
        settings = settings_for({"data_dir": self["data-dir"], "ssl_key": self["ssl-key"]})
        origin = "--ssl-key" if self["ssl-key"] else "AEGIS_SSL_KEY"
        backup, data_dir = Path(self["backup"]), settings.data_dir
        manifest = read_manifest(backup)
        if not data_dir.is_dir() and not data_dir.parent.is_dir():
            raise _refused(f"neither the data directory {data_dir} nor {data_dir.parent} "
                           "exists (see --data-dir)")
        lock = _lock(data_dir) if data_dir.is_dir() else None
        try:
            return self._restore(backup, manifest, settings.ssl_key, origin, data_dir, lock)
        finally:
            if lock is not None:
                lock.close()

    def _restore(self, backup: Path, manifest: dict[str, Any], key: MasterKey | None,
                 origin: str, data_dir: Path, lock: IO[bytes] | None) -> int:
        work_parent = data_dir if data_dir.is_dir() else data_dir.parent
        with tempfile.TemporaryDirectory(dir=work_parent, prefix=".aegis-restore-") as work:
            restored = Path(work) / DATABASE
            print(f"checking {backup} ({manifest['database']['bytes']} bytes)...")
            extract_database(backup, manifest, restored)
            version, stored = _settings_of(restored)
            if version != manifest["schema_version"]:
                raise _refused("the database's schema version differs from its manifest's")
            if version > LATEST_VERSION:
                raise _refused(f"the backup has schema version {version}, made by a newer "
                               f"Aegis; this one knows up to {LATEST_VERSION}")
            key_note = check_key(stored, manifest, key, origin)
            if lock is None:
                lock = _lock(data_dir, always=True)
                assert lock is not None
            try:
                kept = _set_aside(data_dir / DATABASE)
                try:
                    os.chmod(restored, 0o600)
                    os.replace(restored, data_dir / DATABASE)
                except OSError:
                    if kept is not None:  # put the previous database back
                        os.replace(kept, data_dir / DATABASE)
                    raise
                _fsync_directory(data_dir)
            finally:
                lock.close()
        counts = manifest.get("counts", {})
        print(f"restored {backup} into {data_dir / DATABASE}: {counts.get('hosts', '?')} "
              f"host(s), {counts.get('certificates', '?')} certificate(s), made "
              f"{manifest.get('created_at')} by Aegis {manifest.get('aegis_version')}.")
        if kept is not None:
            print(f"the previous database is kept as {kept}.")
        print(f"master key: {key_note}.")
        return 0
