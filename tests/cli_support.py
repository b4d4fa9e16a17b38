"""Helpers for the shell command tests: a running ``aegis run``, the CLI run in this
process against it (its HTTPS client is synchronous, so it needs no reactor), certificates
with chosen lifetimes, and what a real ``openssl s_client`` is served."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aegis.cli import main as cli_main
from tests.aegis_process import AegisProcess
from tests.test_certs_helpers import build_leaf, key_pem


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str


def cli(*args: str) -> Result:
    """``aegis ARGS`` in this process, in the current directory and environment."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli_main(list(args))
        except SystemExit as exc:
            status = int(exc.code or 0)
    result = Result(status, out.getvalue(), err.getvalue())
    assert "Traceback" not in result.out + result.err, result
    return result


def write_pair(directory: Path, stem: str, *names: str, days: float = 90,
               seconds: float = 0) -> tuple[Path, Path, str]:
    """A self-signed ECDSA pair for ``names`` valid ``days`` (+ ``seconds``) from now:
    ``(cert file, key file, SHA-256 fingerprint hex)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC).replace(microsecond=0)
    cert = build_leaf(key, names or ("app.example.com",), not_before=now - timedelta(days=1),
                      not_after=now + timedelta(days=days, seconds=seconds))
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_text(key_pem(key))
    return cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex()


def served_fingerprint(port: int, server_name: str) -> str:
    """The SHA-256 fingerprint (hex) of the certificate ``openssl s_client`` is served."""
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name],
        input="", capture_output=True, text=True, timeout=30, check=False)
    start = handshake.stdout.find("-----BEGIN CERTIFICATE-----")
    end = handshake.stdout.find("-----END CERTIFICATE-----")
    assert start >= 0, handshake.stdout + handshake.stderr
    pem = handshake.stdout[start:end + len("-----END CERTIFICATE-----")] + "\n"
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex()


@contextlib.contextmanager
def running(workdir: Path, env: dict[str, str] | None = None) -> Iterator[AegisProcess]:
    """``aegis run`` in ``workdir`` until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = AegisProcess(workdir, env=env)
    try:
        server.start(expect=("HTTPS listener", "admin listener"))
        yield server
    finally:
        if server.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.stop()
            server.kill()


@contextlib.contextmanager
def pointed_at(server: AegisProcess) -> Iterator[None]:
    """The CLI in the server's directory, with ``AEGIS_ADMIN_URL`` naming its admin port."""
    saved_cwd, saved_url = Path.cwd(), os.environ.get("AEGIS_ADMIN_URL")
    os.chdir(server.workdir)
    os.environ["AEGIS_ADMIN_URL"] = f"https://127.0.0.1:{server.ports['admin listener']}"
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        if saved_url is None:
            os.environ.pop("AEGIS_ADMIN_URL", None)
        else:
            os.environ["AEGIS_ADMIN_URL"] = saved_url
