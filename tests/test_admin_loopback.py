"""The acceptance check as a user runs it: `aegis run`, then curl verifying with the CA."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aegis_process import AegisProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


@pytest.fixture(scope="module")
def aegis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AegisProcess]:
    workdir = tmp_path_factory.mktemp("aegis-admin")
    process = AegisProcess(workdir)
    try:
        process.start(expect=("HTTP listener", "admin listener"))
        yield process
    finally:
        process.kill()


def curl(
    aegis: AegisProcess, path: str, *args: str, host: str = "127.0.0.1", output: Path | None = None
) -> tuple[int, str]:
    port = aegis.ports["admin listener"]
    cmd = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(aegis.workdir / ".cache" / "ssl" / "aegis-local-ca.crt"),
        "-o",
        str(output) if output else "-",
        "-w",
        "\n%{http_code}",
        *args,
    ]
    if host != "127.0.0.1":
        cmd += ["--resolve", f"{host}:{port}:127.0.0.1"]
    cmd.append(f"https://{host}:{port}{path}")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=20)
    assert result.returncode == 0, result.stderr
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def token(aegis: AegisProcess) -> str:
    return (aegis.workdir / "data" / "admin-token").read_text().strip()


def test_curl_verifies_the_admin_certificate_with_the_local_ca(aegis: AegisProcess) -> None:
    code, body = curl(aegis, "/api/v1/openapi.json", "-H", f"Authorization: Bearer {token(aegis)}")
    assert code == 200 and '"openapi"' in body
    code, body = curl(
        aegis,
        "/api/v1/openapi.json",
        "-H",
        f"Authorization: Bearer {token(aegis)}",
        host="localhost",
    )
    assert code == 200


def test_curl_without_token_gets_401_and_trust_bundle_is_public(
    aegis: AegisProcess, tmp_path: Path
) -> None:
    code, body = curl(aegis, "/api/v1/openapi.json")
    assert code == 401 and '"unauthorized"' in body
    code, _ = curl(aegis, "/api/v1/settings/admin-trust-bundle", output=tmp_path / "b.zip")
    assert code == 200
    listing = (
        subprocess.run(
            ["unzip", "-l", str(tmp_path / "b.zip")], capture_output=True, text=True, check=True
        ).stdout
        if shutil.which("unzip")
        else ""
    )
    assert not listing or ("aegis-local-ca.crt" in listing and "2 files" in listing)


def test_cross_site_origin_is_refused_over_the_network(aegis: AegisProcess) -> None:
    code, body = curl(
        aegis,
        "/api/v1/openapi.json",
        "-H",
        "Origin: https://evil.example",
        "-H",
        f"Authorization: Bearer {token(aegis)}",
    )
    assert code == 403 and "forbidden_origin" in body


def test_both_leaves_verify_and_files_are_private(aegis: AegisProcess) -> None:
    cache = aegis.workdir / ".cache" / "ssl"
    for leaf in ("admin-ui-self-signed.crt", "proxy-self-signed.crt"):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(cache / "aegis-local-ca.crt"), str(cache / leaf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    for key in cache.glob("*.key"):
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert token(aegis) not in aegis.text()
    assert "PRIVATE KEY" not in aegis.text()


def test_sigterm_drains_and_exits_zero(aegis: AegisProcess) -> None:
    assert aegis.stop() == 0
