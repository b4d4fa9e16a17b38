"""ACCEPTANCE 35 and 37 with a process of its own (the shared one must not be killed): after
``kill -9`` the stored pairs are intact and served; one corrupted sealed key flags only its
own certificate while the others keep serving."""

from __future__ import annotations

import secrets
import signal
import sqlite3
from pathlib import Path

import trustme

from tests.aegis_process import AegisProcess
from tests.e2e.conftest import ADMIN_TOKEN, Stack, wait_until
from tests.e2e.peers import echo_upstream, fake_cloudflare
from tests.e2e.test_tls import names, served_leaf


def start(workdir: Path, key: str) -> AegisProcess:
    aegis = AegisProcess(workdir, env={"AEGIS_ADMIN_TOKEN": ADMIN_TOKEN, "AEGIS_SSL_KEY": key})
    aegis.start(expect=("HTTPS listener", "admin listener"))
    return aegis


def test_lines_35_and_37_kill_9_then_one_corrupted_key(tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    ca = trustme.CA()
    aegis = start(tmp_path, key)
    with fake_cloudflare() as cloudflare, echo_upstream() as upstream:
        stack = Stack(aegis, cloudflare, upstream, None, ca)
        ids = {}
        for name in ("e2e-keep.example.com", "e2e-break.example.com"):
            leaf = ca.issue_cert(name)
            status, body = stack.api("POST", "/api/v1/certificates", {
                "cert_pem": "".join(b.bytes().decode() for b in leaf.cert_chain_pems),
                "key_pem": leaf.private_key_pem.bytes().decode()})
            assert status == 201, body
            ids[name] = body["id"]
        assert aegis.process is not None
        aegis.process.send_signal(signal.SIGKILL)  # line 35
        aegis.process.wait()
        aegis = stack.aegis = start(tmp_path, key)
        for name in ids:
            wait_until(lambda name=name: names(served_leaf(stack, name.encode())) == [name])
        aegis.process.send_signal(signal.SIGKILL)
        aegis.process.wait()
        database = sqlite3.connect(tmp_path / "data" / "aegis.db", isolation_level=None)
        sealed = database.execute("SELECT key_sealed FROM certificates WHERE id = ?",
                                  (ids["e2e-break.example.com"],)).fetchone()[0]
        broken = bytes(sealed[:-1]) + bytes([sealed[-1] ^ 1])  # the GCM tag no longer holds
        database.execute("UPDATE certificates SET key_sealed = ? WHERE id = ?",
                         (broken, ids["e2e-break.example.com"]))
        database.close()
        aegis = stack.aegis = start(tmp_path, key)  # line 37
        try:
            assert names(served_leaf(stack, b"e2e-keep.example.com")) == ["e2e-keep.example.com"]
            assert names(served_leaf(stack, b"e2e-break.example.com")) != [
                "e2e-break.example.com"]
            status, shown = stack.api("GET", f"/api/v1/certificates/{ids['e2e-break.example.com']}")
            assert status == 200 and shown["problem"]["code"] == "key_unreadable", shown
            status, kept = stack.api("GET", f"/api/v1/certificates/{ids['e2e-keep.example.com']}")
            assert status == 200 and kept["problem"] is None
        finally:
            assert aegis.stop() == 0
