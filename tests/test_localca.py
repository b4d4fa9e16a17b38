"""The local CA: the spec's renewal table row by row, file modes, atomic writes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from aegis.crypto import x509util
from aegis.crypto.keys import private_key_pem
from aegis.localca import (
    ADMIN_BASENAME,
    CA_CERT_FILE,
    CA_KEY_FILE,
    PROXY_BASENAME,
    LocalAuthority,
    LocalCA,
    LocalCAMaintenance,
    ProxyFallbackReissuer,
    admin_certificate_names,
    proxy_certificate_names,
    write_file_atomically,
)
from aegis.store._runner import immediate_runner

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ADMIN = admin_certificate_names("127.0.0.1")
PROXY = proxy_certificate_names(["app.example.com", "*.example.org"])
FILES = (
    CA_CERT_FILE,
    CA_KEY_FILE,
    f"{ADMIN_BASENAME}.crt",
    f"{ADMIN_BASENAME}.key",
    f"{PROXY_BASENAME}.crt",
    f"{PROXY_BASENAME}.key",
)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        name: ((directory / name).read_bytes(), (directory / name).stat().st_mtime_ns)
        for name in FILES
    }


def load(directory: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / name).read_bytes())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "ssl"


def ensure(cache: Path, now: datetime = NOW, proxy: tuple[str, ...] = PROXY) -> LocalAuthority:
    return LocalCA(cache).ensure(ADMIN, proxy, now)


def test_first_run_writes_every_file_with_private_modes(cache: Path) -> None:
    authority = ensure(cache)
    assert sorted(os.listdir(cache)) == sorted(FILES)
    assert set(authority.written) == set(FILES)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    for name in FILES:
        mode = stat.S_IMODE((cache / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), name
    # The only plaintext keys are the spec's three, each PKCS#8 ECDSA P-256.
    for name in (CA_KEY_FILE, f"{ADMIN_BASENAME}.key", f"{PROXY_BASENAME}.key"):
        key = serialization.load_pem_private_key((cache / name).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"


def test_ca_extensions_and_validity(cache: Path) -> None:
    ensure(cache)
    ca = load(cache, CA_CERT_FILE)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.not_valid_after_utc - NOW == timedelta(days=3650)
    assert x509util.signed_by(ca, ca)


def test_leaf_extensions_names_and_backdating(cache: Path) -> None:
    authority = ensure(cache)
    ca = authority.ca_cert
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    for loaded, names in ((authority.admin, ADMIN), (authority.proxy, PROXY)):
        leaf = loaded.leaf
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert leaf.not_valid_before_utc == NOW - timedelta(hours=1)
        assert leaf.not_valid_after_utc == NOW + timedelta(days=365)
        assert x509util.san_names(leaf) == x509util.wanted_san_names(names)
        assert loaded.source == "local" and loaded.id is None
        assert loaded.chain == (leaf, ca)
        assert x509util.key_matches(leaf, loaded.key)
        assert "PRIVATE" not in repr(loaded)
    assert x509util.san_names(authority.admin.leaf) == {"localhost", "127.0.0.1", "::1"}
    assert authority.proxy.names == ("app.example.com", "*.example.org")


def test_admin_names_include_a_specific_bind_address() -> None:
    assert admin_certificate_names("192.0.2.7") == ("localhost", "127.0.0.1", "::1", "192.0.2.7")
    assert admin_certificate_names("0.0.0.0") == ("localhost", "127.0.0.1", "::1")
    assert admin_certificate_names(None) == ("localhost", "127.0.0.1", "::1")


def test_proxy_names_placeholder_without_hosts(cache: Path) -> None:
    assert proxy_certificate_names([]) == ("aegis.invalid", "localhost")
    authority = ensure(cache, proxy=proxy_certificate_names([]))
    assert x509util.san_names(authority.proxy.leaf) == {"aegis.invalid", "localhost"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_verifies_both_leaves(cache: Path) -> None:
    ensure(cache, now=datetime.now(UTC))
    for base in (ADMIN_BASENAME, PROXY_BASENAME):
        result = subprocess.run(
            [
                "openssl",
                "verify",
                "-purpose",
                "sslserver",
                "-CAfile",
                str(cache / CA_CERT_FILE),
                str(cache / f"{base}.crt"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": OK")


# --- the renewal table -------------------------------------------------------------------


def test_valid_files_are_left_alone(cache: Path) -> None:
    ensure(cache)
    before = snapshot(cache)
    authority = ensure(cache, now=NOW + timedelta(days=200))
    assert authority.written == ()
    assert snapshot(cache) == before


@pytest.mark.parametrize("lost", [CA_CERT_FILE, CA_KEY_FILE])
def test_deleted_ca_means_new_ca_and_both_leaves(cache: Path, lost: str) -> None:
    first = ensure(cache)
    (cache / lost).unlink()
    second = ensure(cache)
    assert set(second.written) == set(FILES)
    assert second.ca_cert != first.ca_cert
    for leaf in (second.admin.leaf, second.proxy.leaf):
        assert x509util.signed_by(leaf, second.ca_cert)
        assert not x509util.signed_by(leaf, first.ca_cert)


def test_expired_leaves_are_reissued_ca_kept(cache: Path) -> None:
    first = ensure(cache)
    ca_before = (cache / CA_CERT_FILE).read_bytes()
    later = NOW + timedelta(days=366)
    second = ensure(cache, now=later)
    assert set(second.written) == set(FILES) - {CA_CERT_FILE, CA_KEY_FILE}
    assert (cache / CA_CERT_FILE).read_bytes() == ca_before
    assert second.admin.leaf != first.admin.leaf
    assert second.admin.valid_at(later) and second.proxy.valid_at(later)


def test_leaf_close_to_expiry_is_reissued(cache: Path) -> None:
    ensure(cache)
    second = ensure(cache, now=NOW + timedelta(days=350))
    assert f"{ADMIN_BASENAME}.crt" in second.written


def test_leaf_signed_by_an_impostor_with_the_same_issuer_name_is_reissued(cache: Path) -> None:
    first = ensure(cache)
    ca_name = first.ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(ca_name, str)
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    impostor = x509util.build_ca(impostor_key, ca_name, NOW, 3650)
    assert impostor.subject == first.ca_cert.subject
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    forged = x509util.build_leaf(impostor, impostor_key, leaf_key, "x", ADMIN, NOW, 365)
    write_file_atomically(cache / f"{ADMIN_BASENAME}.key", private_key_pem(leaf_key), 0o600)
    write_file_atomically(
        cache / f"{ADMIN_BASENAME}.crt", forged.public_bytes(serialization.Encoding.PEM), 0o644
    )
    second = ensure(cache)
    assert set(second.written) == {f"{ADMIN_BASENAME}.key", f"{ADMIN_BASENAME}.crt"}
    assert x509util.signed_by(second.admin.leaf, first.ca_cert)


def test_leaf_from_an_older_ca_is_reissued(cache: Path, tmp_path: Path) -> None:
    ensure(cache)
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    (cache / CA_KEY_FILE).unlink()
    ensure(cache)  # new CA, new leaves
    for name in (f"{PROXY_BASENAME}.crt", f"{PROXY_BASENAME}.key"):
        shutil.copy2(old / name, cache / name)  # an old leaf restored from a backup
    third = ensure(cache)
    assert set(third.written) == {f"{PROXY_BASENAME}.key", f"{PROXY_BASENAME}.crt"}
    assert x509util.signed_by(third.proxy.leaf, third.ca_cert)


def test_key_not_matching_certificate_is_reissued(cache: Path) -> None:
    """A crash after the new key's rename and before the certificate's: next start heals."""
    ensure(cache)
    stray = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(cache / f"{PROXY_BASENAME}.key", private_key_pem(stray), 0o600)
    second = ensure(cache)
    assert set(second.written) == {f"{PROXY_BASENAME}.key", f"{PROXY_BASENAME}.crt"}
    assert x509util.key_matches(second.proxy.leaf, second.proxy.key)


def test_ca_key_not_matching_regenerates_the_ca(cache: Path) -> None:
    first = ensure(cache)
    stray = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(cache / CA_KEY_FILE, private_key_pem(stray), 0o600)
    second = ensure(cache)
    assert set(second.written) == set(FILES)
    assert second.ca_cert != first.ca_cert


def test_corrupt_leaf_is_reissued(cache: Path) -> None:
    ensure(cache)
    (cache / f"{ADMIN_BASENAME}.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    second = ensure(cache)
    assert f"{ADMIN_BASENAME}.crt" in second.written


def test_proxy_names_changed_reissues_only_the_proxy(cache: Path) -> None:
    ensure(cache)
    before = snapshot(cache)
    second = ensure(cache, proxy=proxy_certificate_names(["new.example.net"]))
    assert set(second.written) == {f"{PROXY_BASENAME}.key", f"{PROXY_BASENAME}.crt"}
    assert x509util.san_names(second.proxy.leaf) == {"new.example.net"}
    after = snapshot(cache)
    for name in (CA_CERT_FILE, CA_KEY_FILE, f"{ADMIN_BASENAME}.crt", f"{ADMIN_BASENAME}.key"):
        assert after[name] == before[name]


def test_loose_key_mode_is_tightened(cache: Path) -> None:
    ensure(cache)
    (cache / CA_KEY_FILE).chmod(0o644)
    (cache).chmod(0o755)
    ensure(cache)
    assert stat.S_IMODE((cache / CA_KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_stale_temp_files_from_a_crash_are_removed(cache: Path) -> None:
    ensure(cache)
    stale = cache / f".{CA_KEY_FILE}.tmp-0123456789ab"
    stale.write_bytes(b"half a key")
    ensure(cache)
    assert not stale.exists()


# --- atomic writes -----------------------------------------------------------------------


def test_atomic_write_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.key"
    write_file_atomically(target, b"old", 0o600)

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_file_atomically(target, b"new", 0o600)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.key"]


# --- re-issue for a new host set, off the reactor thread -----------------------------------


def test_reissuer_serialises_and_follows_the_host_set(cache: Path) -> None:
    ensure(cache)
    calls: list[str] = []

    def runner(work):  # type: ignore[no-untyped-def]
        calls.append("ran")
        return immediate_runner(work)

    reissuer = ProxyFallbackReissuer(LocalCA(cache), runner, lambda: NOW)
    results: list[object] = []
    reissuer.reissue(["b.example.com", "A.example.com"]).addBoth(results.append)
    reissuer.reissue(["b.example.com", "a.example.com"]).addBoth(results.append)
    assert len(results) == 2 and calls == ["ran", "ran"]
    first, second = results
    assert x509util.san_names(first.leaf) == {"a.example.com", "b.example.com"}  # type: ignore[attr-defined]
    assert first.leaf == second.leaf  # type: ignore[attr-defined]  # same names: untouched


def test_reissuer_waits_for_the_running_reissue(cache: Path) -> None:
    ensure(cache)
    pending: list[tuple[Deferred[object], object]] = []

    def deferred_runner(work):  # type: ignore[no-untyped-def]
        d: Deferred[object] = Deferred()
        pending.append((d, work))
        return d

    reissuer = ProxyFallbackReissuer(LocalCA(cache), deferred_runner, lambda: NOW)
    reissuer.reissue(["one.example"])
    reissuer.reissue(["two.example"])
    assert len(pending) == 1  # the second waits for the first
    d, work = pending.pop()
    d.callback(work())  # type: ignore[operator]
    assert len(pending) == 1


# --- maintenance while running -------------------------------------------------------------

def test_maintenance_reissues_while_running_and_publishes(cache: Path) -> None:
    ensure(cache)
    clock = Clock()
    clock.advance(NOW.timestamp())
    published: list[LocalAuthority] = []
    hosts = ["app.example.com", "*.example.org"]
    maintenance = LocalCAMaintenance(LocalCA(cache), ADMIN, lambda: succeed(list(hosts)),
                                     immediate_runner, clock, [published.append],
                                     interval=3600)
    maintenance.startService()
    clock.advance(3600)
    assert published == []  # all valid: nothing re-issued, nothing published
    clock.advance(366 * 86400)  # the clock jumps a year (ACCEPTANCE 38)
    assert len(published) == 1
    later = NOW + timedelta(days=366, hours=1)
    assert published[0].admin.valid_at(later) and published[0].proxy.valid_at(later)
    hosts.append("new.example.net")
    clock.advance(3600)
    assert len(published) == 2
    assert "new.example.net" in published[1].proxy.names
    assert f"{ADMIN_BASENAME}.crt" not in published[1].written
    maintenance.stopService()
    assert not clock.getDelayedCalls()


def test_maintenance_failure_is_logged_and_retried(cache: Path) -> None:
    ensure(cache)
    clock = Clock()
    clock.advance(NOW.timestamp())
    attempts: list[int] = []

    def host_names() -> Deferred[list[str]]:
        attempts.append(1)
        if len(attempts) == 1:
            return fail(OSError(5, "Input/output error"))
        return succeed(["app.example.com", "*.example.org"])

    published: list[LocalAuthority] = []
    maintenance = LocalCAMaintenance(LocalCA(cache), ADMIN, host_names, immediate_runner,
                                     clock, [published.append], interval=60)
    maintenance.startService()
    clock.advance(60)
    clock.advance(60)
    assert len(attempts) == 2 and published == []
    maintenance.stopService()
