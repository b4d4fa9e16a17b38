"""The local certificate authority and the two certificates it signs.

Files in ``AEGIS_SSL_CACHE_DIR`` (the spec's "Local Certificate Authority" table):

==========================  ==========================================  ========
``aegis-local-ca.crt/.key``  root, ECDSA P-256                           10 years
``admin-ui-self-signed.*``   admin listener: localhost, 127.0.0.1, ::1,  1 year
                             and the admin bind address
``proxy-self-signed.*``      proxy fallback: every configured host name  1 year
==========================  ==========================================  ========

Renewal (the spec's "Certificate Renewal" table, checked by :meth:`LocalCA.ensure` at
start-up): the CA is regenerated only when it is gone (missing, unreadable, or its key no
longer matches it: the remains of a crash between writing the two files). A leaf is
re-issued when missing, unreadable, expired (or within :data:`RENEW_BEFORE` of expiry, so
a server started near the end of the year does not let it lapse while running), not
signed by the current CA (the signature is verified, not just the issuer name), not
matching its key, or covering other names than wanted. :class:`LocalCAMaintenance` applies
the same rules every 12 hours while running; :class:`ProxyFallbackReissuer` when hosts change.

Every file is written atomically (temp file, fsync, rename, directory fsync), the key
before its certificate: a crash leaves either the old pair, or a new key beside the old
certificate, which the key check above turns into a re-issue at the next start. Keys are
0600, the directory 0700. These are the only plaintext private keys Aegis keeps on disk.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from aegis.certs.model import LoadedCertificate
from aegis.crypto import x509util
from aegis.crypto.keys import private_key_pem
from aegis.store.sqlite import ensure_private_directory
from aegis.threads import Runner

log = Logger()
T = TypeVar("T")

CA_CERT_FILE = "aegis-local-ca.crt"
CA_KEY_FILE = "aegis-local-ca.key"
ADMIN_BASENAME = "admin-ui-self-signed"
PROXY_BASENAME = "proxy-self-signed"
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = timedelta(days=30)
#: SANs of the proxy fallback while no proxy host exists (``.invalid`` never resolves).
PLACEHOLDER_PROXY_NAMES = ("aegis.invalid", "localhost")
ADMIN_BASE_NAMES = ("localhost", "127.0.0.1", "::1")
_TEMP_MARK = ".tmp-"


def write_file_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a part.

    The temp file is created with ``mode`` already set (O_EXCL, so never through a
    symlink), fsynced, renamed over ``path``, and the directory fsynced so the rename
    survives a power cut. On any error the temp file is removed and the old file stays.
    """
    temp = path.with_name(f".{path.name}{_TEMP_MARK}{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed ``mode``; never widened
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def admin_certificate_names(bind_address: str | None) -> tuple[str, ...]:
    """The admin certificate's SANs: the loopback names plus a specific bind address."""
    names = list(ADMIN_BASE_NAMES)
    if bind_address and bind_address not in ("0.0.0.0", "::", "") and (  # noqa: S104  # nosec B104
        bind_address.lower() not in names
    ):
        names.append(bind_address.lower())
    return tuple(names)


def proxy_certificate_names(host_names: Sequence[str]) -> tuple[str, ...]:
    """The proxy fallback's SANs: the (normalised) host names, or a placeholder if none."""
    unique = tuple(dict.fromkeys(name.lower() for name in host_names if name))
    return unique or PLACEHOLDER_PROXY_NAMES


@dataclass(frozen=True)
class LocalAuthority:
    """What start-up hands to the listeners: the CA (public part) and both leaves."""

    ca_cert: x509.Certificate
    admin: LoadedCertificate
    proxy: LoadedCertificate
    written: tuple[str, ...]  # file names (re)written by this call; empty when all was valid

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


class LocalCA:
    """The files of the local CA in one directory. Methods block; they are thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    def ensure(
        self, admin_names: Sequence[str], proxy_names: Sequence[str], now: datetime
    ) -> LocalAuthority:
        """Apply the renewal rules at start-up; return the CA and both leaves."""
        with self._lock:
            ensure_private_directory(self.directory)
            self._remove_stale_temp_files()
            written: list[str] = []
            ca_cert, ca_key = self._ensure_ca(now, written)
            admin = self._ensure_leaf(
                ADMIN_BASENAME, "Aegis admin UI", admin_names, ca_cert, ca_key, now, written
            )
            proxy = self._ensure_leaf(
                PROXY_BASENAME, "Aegis proxy fallback", proxy_names, ca_cert, ca_key, now,
                written,
            )
            return LocalAuthority(ca_cert, admin, proxy, tuple(written))

    def ensure_proxy(self, proxy_names: Sequence[str], now: datetime) -> LoadedCertificate:
        """Re-issue the proxy fallback if its names (or anything else) are out of date.

        Blocking; see :class:`ProxyFallbackReissuer` for the reactor-friendly form.
        """
        with self._lock:
            ensure_private_directory(self.directory)
            written: list[str] = []
            ca_cert, ca_key = self._ensure_ca(now, written)
            return self._ensure_leaf(
                PROXY_BASENAME, "Aegis proxy fallback", proxy_names, ca_cert, ca_key, now,
                written,
            )

    def _remove_stale_temp_files(self) -> None:
        for entry in self.directory.iterdir():
            if entry.name.startswith(".") and _TEMP_MARK in entry.name:
                entry.unlink(missing_ok=True)

    def _ensure_ca(
        self, now: datetime, written: list[str]
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert_path, key_path = self.directory / CA_CERT_FILE, self.directory / CA_KEY_FILE
        loaded = _load_pair(cert_path, key_path)
        reason = "missing" if loaded is None else None
        if loaded is not None:
            cert, key = loaded
            if not x509util.signed_by(cert, cert):
                reason = "not self-signed"
            elif not cert.not_valid_after_utc > now:
                reason = "expired"
            else:
                _fix_mode(key_path)
                return cert, key
        log.warn("local CA {reason}: generating a new one in {directory}; re-install "
                 "the trust bundle", reason=reason, directory=str(self.directory))
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"Aegis Local CA {secrets.token_hex(4)}"
        cert = x509util.build_ca(key, name, now, CA_DAYS)
        _write_pair(cert_path, key_path, cert, key)
        written.extend([CA_KEY_FILE, CA_CERT_FILE])
        return cert, key

    def _ensure_leaf(
        self,
        basename: str,
        common_name: str,
        names: Sequence[str],
        ca_cert: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        now: datetime,
        written: list[str],
    ) -> LoadedCertificate:
        cert_path = self.directory / f"{basename}.crt"
        key_path = self.directory / f"{basename}.key"
        loaded = _load_pair(cert_path, key_path)
        reason: str | None = "missing or unreadable"
        if loaded is not None:
            cert, key = loaded
            reason = _leaf_problem(cert, ca_cert, names, now)
            if reason is None:
                _fix_mode(key_path)
                return _loaded(cert, key, ca_cert)
        log.info("{certificate}: issuing a new certificate ({reason})",
                 certificate=basename, reason=reason)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = x509util.build_leaf(ca_cert, ca_key, key, common_name, names, now, LEAF_DAYS)
        _write_pair(cert_path, key_path, cert, key)
        written.extend([key_path.name, cert_path.name])
        return _loaded(cert, key, ca_cert)


def _leaf_problem(
    cert: x509.Certificate, ca_cert: x509.Certificate, names: Sequence[str], now: datetime
) -> str | None:
    if not x509util.signed_by(cert, ca_cert):
        return "not signed by the current local CA"
    if not x509util.valid_at(cert, now):
        return "expired or not yet valid"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return "expires soon"
    if x509util.san_names(cert) != x509util.wanted_san_names(names):
        return "names changed"
    return None


def _load_pair(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The pair if both files parse, the key is ECDSA and matches; else None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not x509util.key_matches(cert, key):
        return None
    return cert, key


def _write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    write_file_atomically(key_path, private_key_pem(key), 0o600)
    write_file_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _fix_mode(key_path: Path) -> None:
    if stat.S_IMODE(key_path.stat().st_mode) != 0o600:
        log.warn("{path} was readable by others; setting mode 0600", path=str(key_path))
        key_path.chmod(0o600)


def _loaded(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> LoadedCertificate:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = ()
    return LoadedCertificate(
        id=None,
        source="local",
        names=dns,
        leaf=cert,
        chain=(cert, ca_cert),
        key=key,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


class ProxyFallbackReissuer:
    """Re-issues the proxy fallback certificate when the set of proxy hosts changes.

    The hosts feature calls :meth:`reissue` with every configured host name; the result is
    the certificate to publish to the TLS layer. Calls are serialised, so the last call's
    names win, and each runs on ``runner`` (a thread) because key generation and fsync must
    not stall the reactor.
    """

    def __init__(self, ca: LocalCA, runner: Runner, now: Callable[[], datetime]) -> None:
        self._ca = ca
        self._runner = runner
        self._now = now
        self._serial = DeferredLock()

    def reissue(self, host_names: Sequence[str]) -> Deferred[LoadedCertificate]:
        names = proxy_certificate_names(host_names)

        def locked() -> Deferred[LoadedCertificate]:
            moment = self._now()
            return self._runner(lambda: self._ca.ensure_proxy(names, moment))

        return self._serial.run(locked)


class LocalCAMaintenance(Service):
    """Applies the renewal rules again every ``interval`` seconds while Aegis runs.

    The spec renews at start-up; a server that runs for a year would otherwise serve
    expired fallback and admin certificates (or after the clock jumps forward). Each check
    reads the current host names (``host_names``, a Deferred so it can query the store),
    runs :meth:`LocalCA.ensure` on ``runner`` (a thread), and when anything was re-issued
    hands the new :class:`LocalAuthority` to every ``publish`` callback (the admin listener,
    the TLS fallback). A failed check is logged and retried at the next interval.
    """

    def __init__(
        self,
        ca: LocalCA,
        admin_names: Sequence[str],
        host_names: Callable[[], Deferred[list[str]]],
        runner: Runner,
        clock: IReactorTime,
        publish: Sequence[Callable[[LocalAuthority], None]],
        interval: float = 12 * 3600,
    ) -> None:
        self._ca = ca
        self._admin_names = tuple(admin_names)
        self._host_names = host_names
        self._runner = runner
        self._clock = clock
        self._publish = tuple(publish)
        self._interval = interval
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> Deferred[LocalAuthority | None]:
        """One check now. Fires with the authority if something was re-issued, else None;
        never fails (errors are logged)."""
        moment = datetime.fromtimestamp(self._clock.seconds(), tz=UTC)

        def ensure(names: list[str]) -> Deferred[LocalAuthority]:
            wanted = proxy_certificate_names(names)
            return self._runner(lambda: self._ca.ensure(self._admin_names, wanted, moment))

        def published(authority: LocalAuthority) -> LocalAuthority | None:
            if not authority.written:
                return None
            log.info("local CA maintenance re-issued {files}", files=", ".join(authority.written))
            for publish in self._publish:
                publish(authority)
            return authority

        def failed(failure: Failure) -> None:
            log.error("local CA maintenance failed: {error}; retrying in {interval}s",
                      error=failure.getErrorMessage(), interval=self._interval)

        d: Deferred[list[str]] = maybeDeferred(self._host_names)
        return d.addCallback(ensure).addCallback(published).addErrback(failed)
