"""`aegis run` on PostgreSQL as a user meets it: a real server, real processes, the admin
API over HTTPS and real TLS handshakes on loopback."""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aegis.crypto.keywrap import MasterKey
from aegis.testing.postgres import PostgresCluster
from tests.aegis_process import AegisProcess, run_aegis
from tests.test_hosts_loopback import Admin

pytestmark = pytest.mark.slow

LISTENERS = ("HTTP listener", "HTTPS listener", "admin listener")
UNREACHABLE_CA = {"AEGIS_ACME_DIRECTORY": "https://127.0.0.1:9/dir"}


def start(workdir: Path, env: dict[str, str]) -> tuple[AegisProcess, Admin]:
    workdir.mkdir(exist_ok=True)
    aegis = AegisProcess(workdir, env={**UNREACHABLE_CA, **env})
    aegis.start(expect=LISTENERS)
    return aegis, Admin(aegis)


def stop(aegis: AegisProcess) -> None:
    assert aegis.stop() == 0, aegis.text()
    assert "Traceback" not in aegis.text() and "PRIVATE KEY" not in aegis.text()


def served_fingerprint(aegis: AegisProcess, sni: str) -> str:
    """SHA-256 of the leaf a real TLS client gets for ``sni``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    port = aegis.ports["HTTPS listener"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def database_text(url: str) -> str:
    """Every row of every table of the database, as text."""
    with psycopg.connect(url) as db:
        tables = [name for (name,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        return "\n".join(
            str(row) for table in tables
            for row in db.execute(f"SELECT t::text FROM {table} t"))


def add_bound_host(admin: Admin, ca: trustme.CA, domain: str) -> tuple[dict[str, Any], str]:
    """Upload a certificate for ``domain`` and a host bound to it; the host and the
    certificate's fingerprint."""
    leaf = ca.issue_cert(domain)
    status, cert = admin.call("POST", "/certificates", {
        "cert_pem": "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems),
        "key_pem": leaf.private_key_pem.bytes().decode(),
    })
    assert status == 201, cert
    status, host = admin.call("POST", "/hosts", {
        "domain": domain, "upstream": "http://127.0.0.1:9", "ssl_mode": "custom",
        "ssl_cert_id": cert["id"],
    })
    assert status == 201, host
    leaf_pem = leaf.cert_chain_pems[0].bytes()
    der = x509.load_pem_x509_certificate(leaf_pem).public_bytes(Encoding.DER)
    return host, hashlib.sha256(der).hexdigest()


def test_run_restart_and_wrong_key(tmp_path: Path, postgres_url: str) -> None:
    key = MasterKey.generate().hex()
    env = {"AEGIS_DATABASE_URL": postgres_url, "AEGIS_SSL_KEY": key}
    aegis, admin = start(tmp_path / "node", env)
    host, fingerprint = add_bound_host(admin, trustme.CA(), "pg.example.com")
    assert served_fingerprint(aegis, "pg.example.com") == fingerprint
    assert "PRIVATE KEY" not in database_text(postgres_url)  # sealed at rest
    stop(aegis)
    assert not (tmp_path / "node" / "data" / "aegis.db").exists()  # nothing went to SQLite

    aegis, admin = start(tmp_path / "node", env)
    try:
        status, hosts = admin.call("GET", "/hosts")
        assert status == 200
        assert [(h["id"], h["domain"]) for h in hosts] == [(host["id"], host["domain"])]
        assert served_fingerprint(aegis, "pg.example.com") == fingerprint
    finally:
        stop(aegis)

    other = tmp_path / "other-node"
    other.mkdir()
    refused = run_aegis(other, "run", env={
        **UNREACHABLE_CA, "AEGIS_DATABASE_URL": postgres_url,
        "AEGIS_SSL_KEY": MasterKey.generate().hex(),
        "AEGIS_HTTP_LISTEN": "tcp:0", "AEGIS_HTTPS_LISTEN": "tcp:0",
        "AEGIS_ADMIN_LISTEN": "tcp:0:interface=127.0.0.1",
    })
    assert refused.returncode == 2
    assert refused.stderr.strip() == "aegis: error: AEGIS_SSL_KEY does not match this database"


def test_bad_database_url_is_one_line(tmp_path: Path) -> None:
    done = run_aegis(tmp_path, "run", env={"AEGIS_DATABASE_URL": "postgresql://u:pw@h:x/d"})
    assert done.returncode == 2
    assert done.stderr == ("aegis: error: AEGIS_DATABASE_URL=(hidden): has a port outside "
                           "1-65535\n")


def test_migrate_store_then_serve_from_postgres(tmp_path: Path, postgres_url: str) -> None:
    workdir = tmp_path / "node"
    # on SQLite, with the master key generated and stored in the database
    aegis, admin = start(workdir, {})
    host, fingerprint = add_bound_host(admin, trustme.CA(), "moved.example.com")
    stop(aegis)

    target = {"AEGIS_DATABASE_URL": postgres_url}
    wrong_key = run_aegis(workdir, "migrate-store", env={
        **target, "AEGIS_SSL_KEY": MasterKey.generate().hex()})
    assert wrong_key.returncode == 2
    assert wrong_key.stderr == "aegis: error: AEGIS_SSL_KEY does not match this database\n"
    copied = run_aegis(workdir, "migrate-store", env=target)
    assert copied.returncode == 0, copied.stderr
    assert "hosts 1" in copied.stdout and "certificates 1" in copied.stdout
    again = run_aegis(workdir, "migrate-store", env=target)
    assert again.returncode == 2
    assert "not empty" in again.stderr and "--force" in again.stderr
    forced = run_aegis(workdir, "migrate-store", "--force", env=target)
    assert forced.returncode == 0, forced.stderr

    (workdir / "data" / "aegis.db").rename(workdir / "data" / "aegis.db.migrated")
    aegis, admin = start(workdir, target)
    try:
        status, hosts = admin.call("GET", "/hosts")
        assert status == 200
        assert [h["id"] for h in hosts] == [host["id"]]
        assert hosts[0]["ssl_cert_id"] == host["ssl_cert_id"]
        assert served_fingerprint(aegis, "moved.example.com") == fingerprint
    finally:
        stop(aegis)


def test_database_outage_503_and_recovery(tmp_path: Path, postgres_url: str,
                                          postgres_cluster: PostgresCluster) -> None:
    env = {"AEGIS_DATABASE_URL": postgres_url, "AEGIS_SSL_KEY": MasterKey.generate().hex()}
    aegis, admin = start(tmp_path / "node", env)
    try:
        _, fingerprint = add_bound_host(admin, trustme.CA(), "steady.example.com")
        postgres_cluster.stop()
        try:
            status, body = admin.call("POST", "/hosts", {
                "domain": "during.example.com", "upstream": "http://127.0.0.1:9"})
            assert status == 503, body
            assert body["error"]["code"] == "store_unavailable"
            # TLS keeps serving from memory
            assert served_fingerprint(aegis, "steady.example.com") == fingerprint
        finally:
            postgres_cluster.start()
        deadline = time.monotonic() + 20
        while True:
            status, body = admin.call("POST", "/hosts", {
                "domain": "after.example.com", "upstream": "http://127.0.0.1:9"})
            if status == 201:
                break
            assert status == 503 and time.monotonic() < deadline, body
            time.sleep(0.5)
        status, hosts = admin.call("GET", "/hosts")
        assert sorted(h["domain"] for h in hosts) == [
            "after.example.com", "steady.example.com"]
    finally:
        stop(aegis)
