"""The shell commands against a real ``aegis run``: every command once, tables and --json,
errors in words with a non-zero status, and ``aegis check``'s exit codes."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme

from aegis.cli._client import Target
from aegis.cli._command import options_first
from aegis.cli._hosts import AddHost
from aegis.cli._status import health_counts
from tests.aegis_process import AegisProcess, run_aegis
from tests.cli_support import cli, pointed_at, running, served_fingerprint, write_pair


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AegisProcess]:
    with running(tmp_path_factory.mktemp("shell")) as process, pointed_at(process):
        yield process


def test_certificate_and_host_commands(server: AegisProcess, tmp_path: Path) -> None:
    cert, key, fingerprint = write_pair(tmp_path, "app", "app.example.com", "www.app.example.com")
    stored = cli("certs", "import", str(cert), str(key), "--json")
    assert stored.status == 0, stored
    cert_id = json.loads(stored.out)["id"]
    listed = json.loads(cli("certs", "list", "--json").out)
    assert [c["fingerprint_sha256"] for c in listed if c["id"] == cert_id] == [fingerprint]
    table = cli("certs", "list").out
    assert table.startswith("ID") and "app.example.com, www.app.example.com" in table
    shown = cli("certs", "show", str(cert_id), "--json")
    assert json.loads(shown.out)["chain_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in shown.out
    assert cli("certs", "show", str(cert_id), "--chain").out.startswith("-----BEGIN CERT")
    assert f"fingerprint_sha256  {fingerprint}" in cli("certs", "show", str(cert_id)).out

    # options after the arguments, as people type them
    added = cli("hosts", "add", "app.example.com", "http://127.0.0.1:9", "--alias",
                "www.app.example.com", "--cert-id", str(cert_id), "--force-https", "yes")
    assert added.status == 0 and "created host" in added.out, added
    host = next(h for h in json.loads(cli("hosts", "list", "--json").out)
                if h["domain"] == "app.example.com")
    assert host["aliases"] == ["www.app.example.com"] and host["force_https"] is True
    assert host["ssl_mode"] == "custom" and host["ssl_cert_id"] == cert_id
    assert "app.example.com" in cli("hosts", "list").out
    assert json.loads(cli("hosts", "show", str(host["id"]), "--json").out)["id"] == host["id"]
    assert "upstream_tls_verify" in cli("hosts", "show", str(host["id"])).out

    in_use = cli("certs", "rm", str(cert_id))
    assert in_use.status == 1 and "app.example.com" in in_use.err, in_use
    renew = cli("certs", "renew", str(cert_id))
    assert renew.status == 1 and f"import --replace {cert_id}" in renew.err, renew
    new_cert, new_key, new_fingerprint = write_pair(
        tmp_path, "app2", "app.example.com", "www.app.example.com", days=200)
    replaced = cli("certs", "import", "--replace", str(cert_id), str(new_cert), str(new_key))
    assert replaced.status == 0 and f"replaced certificate {cert_id}" in replaced.out
    assert json.loads(cli("certs", "show", str(cert_id), "--json").out)[
        "fingerprint_sha256"] == new_fingerprint

    assert cli("hosts", "rm", str(host["id"])).status == 0
    gone = cli("hosts", "show", str(host["id"]))
    assert gone.status == 1 and "no host" in gone.err
    assert json.loads(cli("certs", "rm", str(cert_id), "--json").out) == {"deleted": cert_id}


def test_host_with_an_inline_certificate(server: AegisProcess, tmp_path: Path) -> None:
    cert, key, fingerprint = write_pair(tmp_path, "inline", "inline.example.com")
    added = cli("hosts", "add", "inline.example.com", "http://127.0.0.1:9", "--cert-file",
                str(cert), "--key-file", str(key), "--tls-min-version", "1.3", "--json")
    assert added.status == 0, added
    host = json.loads(added.out)
    assert host["ssl_mode"] == "custom" and host["tls_min_version"] == "1.3"
    assert json.loads(cli("certs", "show", str(host["ssl_cert_id"]), "--json").out)[
        "fingerprint_sha256"] == fingerprint
    assert served_fingerprint(server.ports["HTTPS listener"], "inline.example.com") == (
        fingerprint)
    assert cli("hosts", "add", "x.example", "http://127.0.0.1:9", "--cert-file",
               str(cert)).status == 2  # a key file goes with it
    assert cli("hosts", "rm", str(host["id"])).status == 0
    assert cli("certs", "rm", str(host["ssl_cert_id"])).status == 0


def test_refusals_are_words_not_tracebacks(server: AegisProcess, tmp_path: Path) -> None:
    bad = cli("hosts", "add", "bad..example", "http://127.0.0.1:9")
    assert bad.status == 1 and bad.err.startswith("aegis: error: domain: "), bad
    mismatched_cert, _, _ = write_pair(tmp_path, "one", "one.example")
    _, other_key, _ = write_pair(tmp_path, "two", "two.example")
    refused = cli("certs", "import", str(mismatched_cert), str(other_key))
    assert refused.status == 1 and "key" in refused.err and "PRIVATE" not in refused.err
    missing = cli("certs", "import", str(tmp_path / "nope.crt"), str(other_key))
    assert missing.status == 2 and "cannot read" in missing.err
    assert cli("hosts", "show", "abc").status == 2
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-at-all\n")
    denied = cli("hosts", "list", "--token-file", str(wrong))
    assert denied.status == 1 and "refused (401)" in denied.err
    assert "not-the-token" not in denied.err
    away = cli("hosts", "list", "--admin-url", "https://127.0.0.1:1")
    assert away.status == 1 and "cannot reach the admin API" in away.err
    no_ca = cli("hosts", "list", "--ssl-cache-dir", str(tmp_path))
    assert no_ca.status == 1 and "no CA certificate" in no_ca.err


def test_token_sources(server: AegisProcess, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The default is the file the server generated; --token-file and the environment too."""
    token = (server.workdir / "data" / "admin-token").read_text().strip()
    assert cli("hosts", "list").status == 0
    copy = tmp_path / "token"
    copy.write_text(token)
    monkeypatch.chdir(tmp_path)  # no data/admin-token here
    missing = cli("hosts", "list", "--ssl-cache-dir", str(server.workdir / ".cache/ssl"))
    assert missing.status == 1 and "no admin token" in missing.err
    assert cli("hosts", "list", "--token-file", str(copy), "--ssl-cache-dir",
               str(server.workdir / ".cache/ssl")).status == 0
    monkeypatch.setenv("AEGIS_ADMIN_TOKEN", token)
    assert cli("hosts", "list", "--ssl-cache-dir", str(server.workdir / ".cache/ssl")
               ).status == 0


def test_trust_bundle(server: AegisProcess, tmp_path: Path) -> None:
    ca = (server.workdir / ".cache" / "ssl" / "aegis-local-ca.crt").read_bytes()
    assert cli("trust-bundle", "--out", str(tmp_path / "bundle.zip")).status == 0
    with zipfile.ZipFile(tmp_path / "bundle.zip") as bundle:
        assert bundle.read("aegis-local-ca.crt") == ca
    assert cli("trust-bundle", "--pem", "-o", str(tmp_path / "ca.pem")).status == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert cli("trust-bundle").status == 2


def test_check_and_status_follow_the_certificates(server: AegisProcess, tmp_path: Path) -> None:
    """Healthy, then warning (10 days left), then critical (expired)."""
    def check(*extra: str) -> tuple[int, dict[str, Any]]:
        result = cli("check", "--json", *extra)
        return result.status, json.loads(result.out)

    cert, key, _ = write_pair(tmp_path, "healthy", "healthy.example", days=90)
    assert cli("certs", "import", str(cert), str(key)).status == 0
    status, report = check()
    assert (status, report["status"]) == (0, "ok") and report["findings"] == []
    assert cli("check").out.startswith("OK: ")

    cert, key, _ = write_pair(tmp_path, "soon", "soon.example", days=10)
    soon = json.loads(cli("certs", "import", str(cert), str(key), "--json").out)["id"]
    status, report = check()
    assert (status, report["status"]) == (1, "warning")
    assert [f["certificate_id"] for f in report["findings"]] == [soon]
    assert check("--critical-days", "11")[0] == 2
    assert check("--warn-days", "9", "--critical-days", "3")[0] == 0
    assert "WARNING: certificate" in cli("status").out

    cert, key, _ = write_pair(tmp_path, "brief", "brief.example", days=0, seconds=4)
    brief = json.loads(cli("certs", "import", str(cert), str(key), "--json").out)["id"]
    time.sleep(5)  # a real server and a real clock: let it expire
    status, report = check()
    assert (status, report["status"]) == (2, "critical")
    (expired,) = [f for f in report["findings"] if f.get("certificate_id") == brief]
    assert "expired" in expired["message"]
    # the server's own health agrees (GET /api/v1/health counts it expired)
    assert any("health:" in f["message"] and "1 expired" in f["message"]
               for f in report["findings"])
    overview = json.loads(cli("status", "--json").out)
    assert overview["counts"]["certificates_by_status"]["expired"] == 1
    assert cli("status").status == 0
    # the same exit codes from a real process, as monitoring runs it
    env = {"AEGIS_ADMIN_URL": f"https://127.0.0.1:{server.ports['admin listener']}"}
    assert run_aegis(server.workdir, "check", env=env).returncode == 2
    for ident in (soon, brief):
        assert cli("certs", "rm", str(ident)).status == 0
    assert run_aegis(server.workdir, "check", env=env).returncode == 0
    assert run_aegis(server.workdir, "check", "--admin-url", "https://127.0.0.1:1",
                     env=env).returncode == 2


# Routes the running server does not have yet (``GET /api/v1/health``, the issuance retry)
# and states it cannot reach quickly (an automatic certificate): a stand-in admin API.
class _FakeAdmin(BaseHTTPRequestHandler):
    routes: dict[tuple[str, str], tuple[int, Any]] = {}
    seen: list[tuple[str, str]] = []

    def _answer(self) -> None:
        self.seen.append((self.command, self.path))
        status, body = self.routes.get((self.command, self.path), (
            404, {"error": {"code": "not_found", "message": "no such route", "field": None}}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_admin(tmp_path: Path, routes: dict[tuple[str, str], tuple[int, Any]],
               seen: list[tuple[str, str]] | None = None) -> Iterator[list[str]]:
    """Serve ``routes`` over HTTPS; yield the CLI options that reach it."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    handler = type("Handler", (_FakeAdmin,), {"routes": routes, "seen": [] if seen is None
                                              else seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    ca.cert_pem.write_to_path(str(tmp_path / "fake-ca.pem"))
    token = tmp_path / "fake-token"
    token.write_text("a-token-for-the-fake-api")
    try:
        yield ["--admin-url", f"https://127.0.0.1:{httpd.server_address[1]}",
               "--ca-file", str(tmp_path / "fake-ca.pem"), "--token-file", str(token)]
    finally:
        httpd.shutdown()
        httpd.server_close()


EMPTY = {("GET", "/api/v1/certificates"): (200, []), ("GET", "/api/v1/hosts"): (200, [])}


@pytest.mark.parametrize(("health", "expected"), [
    ((404, {}), 0),
    ((200, {"status": "ok", "certificates": {"expiring": 0, "expired": 0, "failing": 0}}), 0),
    ((200, {"status": "ok", "certificates": {"expiring": 2, "expired": 0}}), 1),
    ((200, {"counts": {"failing": 1}}), 2),
    ((503, {"status": "failing"}), 2),
    ((503, "not json at all"), 2),
])
def test_check_reads_the_health_endpoint(tmp_path: Path, health: tuple[int, Any],
                                         expected: int) -> None:
    with fake_admin(tmp_path, {**EMPTY, ("GET", "/api/v1/health"): health}) as options:
        result = cli("check", "--json", *options)
    assert result.status == expected, result
    assert json.loads(result.out)["exit_code"] == expected


AUTOMATIC = {"id": 7, "domains": ["auto.example"], "source": "letsencrypt", "hosts": []}
RENEWING = {"name": "auto.example", "names": ["auto.example"], "status": "renewing",
            "in_flight": True, "next_attempt_at": None}


def test_renew_an_automatic_certificate_asks_for_a_retry(tmp_path: Path) -> None:
    routes = {("GET", "/api/v1/certificates/7"): (200, AUTOMATIC)}
    seen: list[tuple[str, str]] = []
    with fake_admin(tmp_path, routes, seen) as options:
        unsupported = cli("certs", "renew", "7", *options)
        assert unsupported.status == 1
        assert "does not support renewing on demand" in unsupported.err
        routes[("POST", "/api/v1/certificates/7/renew")] = (200, RENEWING)
        renewed = cli("certs", "renew", "7", "--json", *options)
        shown = cli("certs", "renew", "7", *options)
    assert renewed.status == 0, renewed
    assert json.loads(renewed.out)["lifecycle"]["status"] == "renewing"
    assert "renewal of auto.example started" in shown.out
    assert seen.count(("POST", "/api/v1/certificates/7/renew")) == 3


def test_health_counts_are_found_where_they_sit() -> None:
    assert health_counts({"expired": 1}) == {"expired": 1}
    assert health_counts({"certificates": {"counts": {"expiring": 3, "failing": True}}}) == {
        "expiring": 3}
    assert health_counts(["not", "a", "mapping"]) == {}
    assert health_counts(None) == {}


@pytest.mark.parametrize(("listen", "url"), [
    ("", "https://127.0.0.1:9443"),
    ("tcp:9443:interface=127.0.0.1", "https://127.0.0.1:9443"),
    ("tcp:9555:interface=\\:\\:1", "https://[::1]:9555"),
    ("tcp:port=9558:interface=127.0.0.2", "https://127.0.0.2:9558"),
    ("nonsense", "https://127.0.0.1:9443"),
    ("tcp:9556", "https://127.0.0.1:9556"),
    ("tcp:9557:interface=0.0.0.0", "https://127.0.0.1:9557"),
    ("unix:/run/aegis.sock", "https://127.0.0.1:9443"),
])
def test_admin_url_follows_the_admin_listener(listen: str, url: str) -> None:
    target = Target.from_options({}, {"AEGIS_ADMIN_LISTEN": listen})
    assert target.base_url == url
    assert Target.from_options({"admin-url": "https://h:1/"}, {}).base_url == "https://h:1"
    assert Target.from_options({}, {"AEGIS_ADMIN_URL": "https://e:2"}).base_url == "https://e:2"


def test_options_may_follow_arguments() -> None:
    add = AddHost()
    add.parseOptions(["a.example", "--alias", "b.example", "http://127.0.0.1:1", "--json",
                      "--alias=c.example"])
    assert (add["domain"], add["upstream"]) == ("a.example", "http://127.0.0.1:1")
    assert add["aliases"] == ["b.example", "c.example"] and add["json"]
    assert options_first(add, ["--", "-x"]) == ["--", "-x"]
