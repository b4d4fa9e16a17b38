"""The backup file: a gzip-compressed tar of ``manifest.json`` then ``aegis.db``.

A tar because every machine can open one (``tar -xzOf backup.tar.gz manifest.json`` reads the
manifest without Aegis), and because the database streams into and out of it without being
held in memory. Reading is strict: exactly those two regular members, nothing else is looked
at and nothing is ever extracted by its own name (no path from the archive reaches the file
system), the manifest at most 1 MiB, the database checked against the manifest's size and
SHA-256 while it is copied out.

The manifest (``format_version`` 1)::

    {"format": "aegis-backup", "format_version": 1, "aegis_version": "...",
     "created_at": "2026-12-02T06:00:00Z", "schema_version": 1,
     "key_check": "<base64>", "master_key_included": false,
     "counts": {"hosts": 3, "certificates": 4},
     "database": {"file": "aegis.db", "bytes": 73728, "sha256": "<hex>"}}

``key_check`` is the database's own master-key check value (``ssl_key_check``): the AES-GCM
seal of a constant under the master key. Whoever holds a key can tell whether it is the one
this backup needs; nobody learns the key from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from aegis.cli._client import CommandFailed

FORMAT = "aegis-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "aegis.db"
MAX_MANIFEST_BYTES = 1024 * 1024
CHUNK = 1024 * 1024


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """A new file at ``path``, there only once everything was written and fsynced: a
    failed or interrupted command leaves the previous file (or none), never a part."""
    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_backup(out: Path, manifest: dict[str, Any], database: Path) -> None:
    """Write the archive atomically, 0600 (the database holds sealed keys)."""
    data = json.dumps(manifest, indent=2).encode("utf-8") + b"\n"
    with atomic_output(out) as handle, tarfile.open(fileobj=handle, mode="w:gz") as archive:
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, 0
        archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(DATABASE)
        info.size, info.mode, info.mtime = database.stat().st_size, 0o600, 0
        with database.open("rb") as source:
            archive.addfile(info, source)


def _refuse(path: Path, reason: str) -> CommandFailed:
    return CommandFailed(f"{path} is not a usable Aegis backup: {reason}")


def _member(archive: tarfile.TarFile, name: str, path: Path) -> tarfile.TarInfo:
    try:
        member = archive.getmember(name)
    except KeyError:
        raise _refuse(path, f"it has no {name}") from None
    if not member.isfile():
        raise _refuse(path, f"{name} is not a regular file")
    return member


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, checked for its shape (nothing is written)."""
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            member = _member(archive, MANIFEST, path)
            if member.size > MAX_MANIFEST_BYTES:
                raise _refuse(path, "its manifest is too large")
            stream = archive.extractfile(member)
            assert stream is not None
            manifest = json.loads(stream.read())
    except FileNotFoundError:
        raise CommandFailed(f"no backup file at {path}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _refuse(path, f"not a gzip tar archive ({exc})") from None
    except ValueError:
        raise _refuse(path, "its manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, "its manifest does not name the aegis-backup format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _refuse(path, f"format version {manifest.get('format_version')!r}; this Aegis "
                      f"reads version {FORMAT_VERSION}")
    database = manifest.get("database")
    if not (isinstance(database, dict) and isinstance(database.get("bytes"), int)
            and isinstance(database.get("sha256"), str)
            and isinstance(manifest.get("schema_version"), int)):
        raise _refuse(path, "its manifest lacks the database size, digest or schema version")
    return manifest


def extract_database(path: Path, manifest: dict[str, Any], target: Path) -> None:
    """Copy ``aegis.db`` out to ``target`` (a new 0600 file), checking size and SHA-256."""
    expected = manifest["database"]
    digest, size = hashlib.sha256(), 0
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            stream = archive.extractfile(_member(archive, DATABASE, path))
            assert stream is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    if size > expected["bytes"]:
                        break
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
    except (tarfile.TarError, EOFError) as exc:
        raise _refuse(path, f"the archive is damaged ({exc})") from None
    if size != expected["bytes"] or digest.hexdigest() != expected["sha256"]:
        raise _refuse(path, "aegis.db does not match the size and SHA-256 in its manifest "
                      "(damaged or altered)")
