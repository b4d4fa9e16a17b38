"""A running ``aegis run`` and the signals operators send it: SIGUSR1 (logrotate), SIGHUP."""

from __future__ import annotations

import grp
import hashlib
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from aegis.certs.validate import validate_pair
from aegis.crypto.keys import load_private_key_pem
from aegis.crypto.keywrap import KeyWrapper, MasterKey
from aegis.store._runner import immediate_runner
from aegis.store.records import HostFields
from aegis.store.sqlite import SQLiteStore
from tests.aegis_process import ROOT, AegisProcess

pytestmark = pytest.mark.integration

_COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /r(?P<n>\d+) HTTP/1\.1" '
    r'404 \d+ "-" "aegis-test"$')


def _requests(port: int, numbers: range) -> None:
    """Keep-alive requests for an unknown host: Aegis answers 404 itself and logs each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for n in numbers:
            conn.request("GET", f"/r{n}", headers={"Host": "nowhere.test",
                                                   "User-Agent": "aegis-test"})
            response = conn.getresponse()
            response.read()
            assert response.status == 404
    finally:
        conn.close()


def _numbers(path: Path) -> list[int]:
    found = []
    for line in path.read_text().splitlines():
        match = _COMBINED.match(line)
        assert match, line
        found.append(int(match["n"]))
    return found


def test_logrotate_rename_and_sigusr1_lose_no_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    aegis = AegisProcess(tmp_path, env={"AEGIS_ACCESS_LOG": str(log)})
    try:
        aegis.start()
        port = aegis.ports["HTTP listener"]
        _requests(port, range(0, 50))
        log.rename(tmp_path / "access.log.1")  # what logrotate does, then its postrotate:
        assert aegis.process is not None
        aegis.process.send_signal(signal.SIGUSR1)
        aegis.wait_for(f"reopened the log {log}")
        _requests(port, range(50, 100))
        assert aegis.stop() == 0, aegis.text()
    finally:
        aegis.kill()
    assert _numbers(tmp_path / "access.log.1") == list(range(50))
    assert _numbers(log) == list(range(50, 100))  # the last batch flushed at shutdown
    assert "GET /r" not in aegis.text()  # the file, not stdout


def test_access_log_on_stdout_by_default_and_off(tmp_path: Path) -> None:
    for setting, expected in ((None, True), ("off", False)):
        workdir = tmp_path / str(setting)
        workdir.mkdir()
        aegis = AegisProcess(workdir, env={"AEGIS_ACCESS_LOG": setting} if setting else None)
        try:
            aegis.start()
            _requests(aegis.ports["HTTP listener"], range(3))
            assert aegis.stop() == 0, aegis.text()
        finally:
            aegis.kill()
        lines = [line for line in aegis.text().splitlines() if "GET /r" in line]
        assert [bool(_COMBINED.match(line)) for line in lines] == [True] * (3 if expected else 0)


def _tls_connection(port: int, server_name: str) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name)


def _served_fingerprint(port: int, server_name: str) -> str:
    with _tls_connection(port, server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def _status_on(tls: ssl.SSLSocket, host: str) -> int:
    """One keep-alive request on an open TLS connection; the status of its response."""
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        assert chunk, "the connection was closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split()[1])


def _write_from_another_process(database: Path, key_hex: str, names: tuple[str, ...],
                                upstream_port: int) -> str:
    """What another process (a restore, a second tool) does: a certificate and a host
    written straight into the SQLite file through the store API. Returns the fingerprint."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    chain = x509.load_pem_x509_certificates(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    key = load_private_key_pem(leaf.private_key_pem.bytes())
    validated = validate_pair(chain, key, now=datetime.now(UTC))  # type: ignore[arg-type]
    store = SQLiteStore.open(database, immediate_runner, migrate=False)
    try:
        store.transact_blocking(lambda txn: txn.add_certificate(
            validated.to_fields(KeyWrapper(MasterKey.from_hex(key_hex)))))
        store.transact_blocking(lambda txn: txn.add_host(HostFields(
            domain=names[1], upstream=f"http://127.0.0.1:{upstream_port}")))
    finally:
        store.close()
    return hashlib.sha256(chain[0].public_bytes(Encoding.DER)).hexdigest()


def test_sighup_serves_what_another_process_stored_and_keeps_connections(
        tmp_path: Path) -> None:
    key_hex = MasterKey.generate().hex()
    aegis = AegisProcess(tmp_path, env={"AEGIS_SSL_KEY": key_hex, "AEGIS_ACCESS_LOG": "off"})
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the new host's upstream refuses
    try:
        aegis.start(expect=("HTTP listener", "HTTPS listener"))
        https = aegis.ports["HTTPS listener"]
        before = _served_fingerprint(https, "reload.test")
        kept = _tls_connection(https, "reload.test")
        assert _status_on(kept, "app.reload.test") == 404  # no such host yet
        stored = _write_from_another_process(
            tmp_path / "data" / "aegis.db", key_hex, ("reload.test", "app.reload.test"),
            closed.getsockname()[1])
        assert _served_fingerprint(https, "reload.test") == before  # not before the signal
        admin_leaf = tmp_path / ".cache" / "ssl" / "admin-ui-self-signed.crt"
        admin_leaf.unlink()  # a local CA file removed by hand: SIGHUP re-checks them
        assert aegis.process is not None
        aegis.process.send_signal(signal.SIGHUP)
        aegis.wait_for("SIGHUP reload finished")
        assert "SIGHUP reload finished (failed" not in aegis.text()
        assert admin_leaf.exists() and "re-issued admin-ui-self-signed" in aegis.text()
        assert _served_fingerprint(https, "reload.test") == stored != before
        assert _served_fingerprint(https, "app.reload.test") == stored
        # the connection opened before the reload still works, and sees the new host
        assert _status_on(kept, "app.reload.test") == 502
        kept.close()
        assert aegis.stop() == 0, aegis.text()
    finally:
        closed.close()
        aegis.kill()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate")
def test_the_shipped_logrotate_snippet_rotates_a_running_aegis(tmp_path: Path) -> None:
    """contrib/logrotate/aegis itself, run by logrotate against a running aegis: only the
    path, the owner and the signal's addressee differ (no systemd here)."""
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    log = logs / "access.log"
    aegis = AegisProcess(tmp_path, env={"AEGIS_ACCESS_LOG": str(log)})
    try:
        aegis.start()
        assert aegis.process is not None
        snippet = (ROOT / "contrib" / "logrotate" / "aegis").read_text()
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        config = (snippet.replace("/var/log/aegis/*.log {", f"{logs}/*.log {{")
                  .replace("create 0640 aegis aegis", f"create 0640 {user} {group}")
                  .replace("systemctl kill --signal=USR1 --kill-whom=main aegis.service",
                           f"kill -USR1 {aegis.process.pid}"))
        assert config.count(str(logs)) == 1 and f"kill -USR1 {aegis.process.pid}" in config
        (tmp_path / "logrotate.conf").write_text(config)
        port = aegis.ports["HTTP listener"]
        _requests(port, range(0, 20))
        deadline = time.monotonic() + 5
        while log.stat().st_size == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the first batch is out (logrotate's notifempty skips empty logs)
        _requests(port, range(20, 30))  # these wait in the batch while logrotate renames
        rotated = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
            capture_output=True, text=True, timeout=60, check=False)
        assert rotated.returncode == 0, rotated.stderr
        aegis.wait_for(f"reopened the log {log}")
        _requests(port, range(30, 60))
        assert aegis.stop() == 0, aegis.text()
    finally:
        aegis.kill()
    # delaycompress: the first rotation stays uncompressed as access.log.1
    assert _numbers(logs / "access.log.1") == list(range(30))
    assert _numbers(log) == list(range(30, 60))
