"""``aegis backup`` while the server writes, ``aegis restore`` into a fresh instance that serves
the same certificates, refusals that change nothing, and ``aegis export``/``import``."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import resource
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import trustme

from aegis.crypto.keywrap import MasterKey
from tests.aegis_process import ROOT, AegisProcess, run_aegis
from tests.cli_support import cli, pointed_at, running, served_fingerprint, write_pair

KEY = MasterKey.generate().hex()
OTHER_KEY = MasterKey.generate().hex()


class Writer(threading.Thread):
    """Another admin client: uploads a certificate and creates a host for it, in a loop."""

    def __init__(self, server: AegisProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.stop, self.written, self.errors = server, threading.Event(), 0, []
        self.ca = trustme.CA()

    def call(self, connection: http.client.HTTPSConnection, path: str,
             body: dict[str, Any]) -> dict[str, Any]:
        token = (self.server.workdir / "data" / "admin-token").read_text().strip()
        connection.request("POST", path, json.dumps(body), {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        document: dict[str, Any] = json.loads(answer.read())
        if answer.status != 201:
            self.errors.append(document)
        return document

    def run(self) -> None:
        context = ssl.create_default_context(
            cafile=str(self.server.workdir / ".cache/ssl/aegis-local-ca.crt"))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.server.ports["admin listener"], context=context, timeout=30)
        while not self.stop.is_set():
            name = f"w{self.written}.example.com"
            leaf = self.ca.issue_cert(name)
            cert = self.call(connection, "/api/v1/certificates", {
                "cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
                "key_pem": leaf.private_key_pem.bytes().decode()})
            self.call(connection, "/api/v1/hosts", {
                "domain": name, "upstream": "http://127.0.0.1:9", "ssl_mode": "custom",
                "ssl_cert_id": cert["id"]})
            self.written += 1
        connection.close()


def _counts(database: Path) -> tuple[int, int]:
    db = sqlite3.connect(database)
    try:
        return (db.execute("SELECT count(*) FROM hosts").fetchone()[0],
                db.execute("SELECT count(*) FROM certificates").fetchone()[0])
    finally:
        db.close()


def _tree(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` and its SHA-256: "nothing changed" made checkable."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def test_backup_under_writes_restores_into_a_fresh_instance(tmp_path: Path) -> None:
    env = {"AEGIS_SSL_KEY": KEY}
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    with running(first, env) as server, pointed_at(server):
        cert, key, fingerprint = write_pair(tmp_path, "app", "app.example.com")
        cert_id = json.loads(cli("certs", "import", str(cert), str(key), "--json").out)["id"]
        assert cli("hosts", "add", "app.example.com", "http://127.0.0.1:9", "--cert-id",
                   str(cert_id)).status == 0
        writer = Writer(server)
        writer.start()
        while writer.written < 5 and writer.is_alive():
            writer.join(0.05)
        before = writer.written
        backup = run_aegis(first, "backup", str(tmp_path / "b.tar.gz"), "--step-pages", "1",
                           env=env)
        during = writer.written - before
        writer.stop.set()
        writer.join(30)
        assert backup.returncode == 0, backup.stderr
        assert writer.errors == [] and during > 0, (writer.errors, during)
        assert "pages (100%)" in backup.stderr and "Traceback" not in backup.stderr
        assert "needs the master key" in backup.stdout
        listed = json.loads(cli("certs", "list", "--json").out)
        # nothing a restore could refuse: a running server holds the lock
        running_refusal = run_aegis(first, "restore", str(tmp_path / "b.tar.gz"), env=env)
        assert running_refusal.returncode == 1 and "running" in running_refusal.stderr
    archive_path = tmp_path / "b.tar.gz"
    assert stat.S_IMODE(archive_path.stat().st_mode) == 0o600
    with tarfile.open(archive_path) as archive:
        assert archive.getnames() == ["manifest.json", "aegis.db"]
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (tmp_path / "copy.db").write_bytes(
            archive.extractfile("aegis.db").read())  # type: ignore[union-attr]
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert b"PRIVATE KEY" not in (tmp_path / "copy.db").read_bytes()  # keys stay sealed
    copy.close()
    hosts, certificates = _counts(tmp_path / "copy.db")
    assert manifest["counts"] == {"hosts": hosts, "certificates": certificates}
    # The writer uploads a certificate, then (a second request) a host bound to it: a
    # snapshot may fall between the two, never anywhere else.
    assert certificates - hosts in (0, 1) and hosts >= 6
    assert manifest["master_key_included"] is False
    assert manifest["key_check"] and KEY not in archive_path.read_bytes().hex()

    with running(fresh):  # a fresh instance, started once: its own database and key
        pass
    untouched = _tree(fresh)
    for key, origin in ((None, "outside the database"), (OTHER_KEY, "does not open")):
        refused = run_aegis(fresh, "restore", str(archive_path),
                            env={} if key is None else {"AEGIS_SSL_KEY": key})
        assert refused.returncode == 1 and origin in refused.stderr, refused.stderr
        assert "nothing was changed" in refused.stderr
        assert _tree(fresh) == untouched
    restored = run_aegis(fresh, "restore", str(archive_path), env=env)
    assert restored.returncode == 0, restored.stderr
    kept = sqlite3.connect(fresh / "data" / "aegis.db.before-restore")
    assert kept.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept.close()
    with running(fresh, env) as server, pointed_at(server):
        assert served_fingerprint(server.ports["HTTPS listener"], "app.example.com") == (
            fingerprint)
        again = json.loads(cli("certs", "list", "--json").out)
        assert len(again) == certificates
        assert {c["fingerprint_sha256"] for c in again} <= {
            c["fingerprint_sha256"] for c in listed}
        assert cli("check").status == 0


def test_restore_refuses_damaged_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_bytes(b"hello")
    result = run_aegis(tmp_path, "restore", str(not_tar))
    assert result.returncode == 1 and "not a usable Aegis backup" in result.stderr
    # a real backup whose database was altered after the manifest was written
    with running(tmp_path / "src") as server:
        pass
    made = run_aegis(server.workdir, "backup", str(tmp_path / "good.tar.gz"))
    assert made.returncode == 0, made.stderr
    assert "master key is stored in this database" in made.stdout
    with tarfile.open(tmp_path / "good.tar.gz") as good, \
            tarfile.open(tmp_path / "bad.tar.gz", "w:gz") as bad:
        for member in good.getmembers():
            data = good.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "aegis.db":
                data = data[:-1] + bytes([data[-1] ^ 1])
            bad.addfile(member, io.BytesIO(data))
    result = run_aegis(tmp_path, "restore", str(tmp_path / "bad.tar.gz"))
    assert result.returncode == 1 and "SHA-256" in result.stderr
    assert os.listdir(tmp_path / "data") == []
    # its own stored key opens it: restored without AEGIS_SSL_KEY
    result = run_aegis(tmp_path, "restore", str(tmp_path / "good.tar.gz"))
    assert result.returncode == 0 and "own stored master key" in result.stdout, result.stderr
    assert stat.S_IMODE((tmp_path / "data" / "aegis.db").stat().st_mode) == 0o600


def test_export_and_import_between_instances(tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a long enough passphrase\n")
    with running(tmp_path / "a") as source, pointed_at(source):
        cert, key, fingerprint = write_pair(tmp_path, "app", "app.example.com")
        cert_id = json.loads(cli("certs", "import", str(cert), str(key), "--json").out)["id"]
        assert cli("hosts", "add", "app.example.com", "http://127.0.0.1:9", "--cert-id",
                   str(cert_id), "--hsts", "yes").status == 0
        assert cli("hosts", "add", "plain.example.com", "http://127.0.0.1:9").status == 0
        assert cli("export", str(tmp_path / "public.json")).status == 0
        assert cli("export", str(tmp_path / "short.json"), "--include-keys").status == 2
        result = cli("export", str(tmp_path / "full.json"), "--include-keys",
                     "--passphrase-file", str(passphrase), "--json")
        assert json.loads(result.out)["keys"] == 1, result
        again = cli("import", str(tmp_path / "full.json"), "--passphrase-file", str(passphrase),
                    "--json")
        assert {row["result"] for row in json.loads(again.out)["results"]} == {"skipped"}
    public = (tmp_path / "public.json").read_text()
    full = (tmp_path / "full.json").read_text()
    assert "PRIVATE KEY" not in public and key.read_text() not in full
    assert "BEGIN ENCRYPTED PRIVATE KEY" in full and "BEGIN PRIVATE KEY" not in full
    assert stat.S_IMODE((tmp_path / "full.json").stat().st_mode) == 0o600
    assert json.loads(public)["format"] == "aegis-export"

    with running(tmp_path / "b") as target, pointed_at(target):
        without_keys = cli("import", str(tmp_path / "public.json"), "--json")
        rows = {row["name"]: row for row in json.loads(without_keys.out)["results"]}
        assert rows["app.example.com"]["result"] == "skipped"  # the host: no certificate
        assert rows["plain.example.com"]["result"] == "created"
        wrong = tmp_path / "wrong"
        wrong.write_text("not the passphrase at all")
        failed = cli("import", str(tmp_path / "full.json"), "--passphrase-file", str(wrong))
        assert failed.status == 1 and "failed" in failed.out and "passphrase" in failed.out
        imported = cli("import", str(tmp_path / "full.json"), "--passphrase-file",
                       str(passphrase))
        assert imported.status == 0, imported
        assert "created" in imported.out and "already present" in imported.out
        host = next(h for h in json.loads(cli("hosts", "list", "--json").out)
                    if h["domain"] == "app.example.com")
        assert host["hsts_enabled"] is True and host["ssl_mode"] == "custom"
        assert served_fingerprint(target.ports["HTTPS listener"], "app.example.com") == (
            fingerprint)


def test_backup_that_cannot_be_written_leaves_nothing(tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: the command fails in words and leaves
    neither a partial backup nor its work files."""
    with running(tmp_path / "src") as server:
        pass
    out = tmp_path / "out"
    out.mkdir()

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    result = subprocess.run(
        [sys.executable, "-m", "aegis", "backup", str(out / "b.tar.gz")], cwd=server.workdir,
        capture_output=True, text=True, timeout=60, preexec_fn=small_files, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("aegis: error: ") and "Traceback" not in result.stderr
    assert list(out.iterdir()) == []


def test_export_skips_a_key_that_no_longer_opens(tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a long enough passphrase")
    with running(tmp_path / "a") as server, pointed_at(server):
        for name in ("good.example", "bad.example"):
            cert, key, _ = write_pair(tmp_path, name, name)
            assert cli("certs", "import", str(cert), str(key)).status == 0
    db = sqlite3.connect(tmp_path / "a" / "data" / "aegis.db")
    sealed = db.execute("SELECT key_sealed FROM certificates WHERE id = 2").fetchone()[0]
    db.execute("UPDATE certificates SET key_sealed = ? WHERE id = 2",
               (sealed[:-1] + bytes([sealed[-1] ^ 1]),))
    db.commit()
    db.close()
    with running(tmp_path / "a") as server, pointed_at(server):
        result = cli("export", str(tmp_path / "x.json"), "--include-keys", "--passphrase-file",
                     str(passphrase))
        assert result.status == 0 and "certificate 2 does not open" in result.err, result
        exported = json.loads((tmp_path / "x.json").read_text())["certificates"]
        assert [bool(cert["key_pem"]) for cert in exported] == [True, False]
        assert cli("check").status == 2  # the server flags it too: not served
