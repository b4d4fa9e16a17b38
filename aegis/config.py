"""Settings: every option is a command-line flag *and* an ``AEGIS_*`` environment variable.

The table :data:`SETTINGS` is the single place a setting is declared: the twistd
``Options``, the ``aegis run --help`` text, the README table and validation all come from it,
so a new setting is one new row. Precedence: command line, then environment, then default.

Validation happens before anything is started, and fails with :class:`ConfigError` whose
message names the setting; callers turn that into a one-line error and exit status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from aegis.crypto.keywrap import MasterKey, MasterKeyError
from aegis.monitor import options as _mon


class ConfigError(Exception):
    """A setting has an unusable value. ``str()`` is one line naming the setting."""


def _parse_endpoint(value: str) -> str:
    """Accept any Twisted server endpoint description (``tcp:443``, ``unix:/run/a.sock``).

    Building the endpoint against a memory reactor checks its grammar and arguments without
    binding anything. TLS endpoint types are refused: Aegis wraps listeners in TLS itself so
    it can choose the certificate per connection.
    """
    kind = value.split(":", 1)[0].strip().lower()
    if kind in ("ssl", "tls", "le", "lets"):
        raise ValueError("give a plain endpoint such as tcp:443; Aegis adds TLS itself")
    try:
        endpoint = serverFromString(MemoryReactor(), value)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a Twisted endpoint description ({exc})") from None
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    return value


def _parse_path(value: str) -> Path:
    if not value or "\x00" in value:
        raise ValueError("must be a non-empty path")
    return Path(value)


def _parse_master_key(value: str) -> MasterKey:
    try:
        return MasterKey.from_hex(value)
    except MasterKeyError as exc:
        raise ValueError(str(exc)) from None


def _parse_token(value: str) -> str:
    if len(value) < 16 or not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ValueError("must be at least 16 printable characters without spaces")
    return value


def _parse_seconds(value: str, off: bool = False, most: float = 3600) -> float:
    """Seconds in (0, ``most``]; with ``off``, 0 is allowed too and means "no limit"."""
    zero = " (0: no limit)" if off else ""
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"must be a number of seconds{zero}") from None
    lowest_ok = seconds >= 0 if off else seconds > 0
    if not lowest_ok or seconds > most:
        raise ValueError(f"must be between 0 and {most:g} seconds{zero}")
    return seconds


def _parse_via(value: str) -> str:
    # RFC 9110 7.6.3: received-by is a pseudonym (a token) when the host is not disclosed.
    if value and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}", value):
        raise ValueError("must be empty (no Via) or a token such as aegis (letters, digits, "
                         "-._~ and similar, at most 64)")
    return value


def _parse_public_port(value: str) -> int | None:
    if value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be empty (the HTTPS listener's own port) or a port 1-65535")
    return int(value)


def _parse_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("must be an http(s) URL")
    return value.rstrip("/") if value.endswith("/") and value.count("/") > 2 else value


def _parse_email(value: str) -> str:
    if value and not re.fullmatch(r"[^@\s,;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", value):
        raise ValueError("must be an email address")
    return value


def _parse_existing_file(value: str) -> Path:
    path = _parse_path(value)
    if not path.is_file():
        raise ValueError(f"file {value!r} does not exist")
    return path


def _parse_key_type(value: str) -> str:
    if value not in ("ecdsa-p256", "rsa-2048"):
        raise ValueError("must be ecdsa-p256 or rsa-2048")
    return value


def _parse_access_log(value: str) -> str:
    """``off``, ``-`` (stdout) or a file Aegis can append to (created if missing)."""
    if value in ("off", "-"):
        return value
    path = _parse_path(value)
    if path.is_dir():
        raise ValueError("is a directory; give a file path, - (stdout) or off")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError("file is not writable")
    elif not path.parent.is_dir():
        raise ValueError(f"directory {str(path.parent)!r} does not exist")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"directory {str(path.parent)!r} is not writable")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError("must be " + ", ".join(choices[:-1]) + " or " + choices[-1])
        return value
    return parse
def _parse_database_url(value: str) -> str | None:
    if value == "":
        return None
    from aegis.store.postgres import check_url  # psycopg only when PostgreSQL is chosen

    return check_url(value)
def _parse_acme_profile(value: str) -> str:
    from aegis.sources.acme.profiles import parse_profile  # the source owns the rule

    return parse_profile(value) if value else ""


def _parse_acme_challenge(value: str) -> str:
    from aegis.sources.acme.challenges import parse_challenge

    return parse_challenge(value)


def _parse_directories(value: str) -> tuple[str, ...]:
    from aegis.sources.acme.fallback import parse_directories

    return parse_directories(value)


def _parse_eab_kid(value: str) -> str:
    if any(ord(c) < 0x21 or ord(c) > 0x7e for c in value) or len(value) > 256:
        raise ValueError("must be the CA's key identifier (printable ASCII, no spaces)")
    return value


def _parse_eab_hmac_key(value: str) -> str:
    from aegis.sources.acme.eab import parse_hmac_key

    return parse_hmac_key(value) if value else ""


@dataclass(frozen=True)
class SettingSpec:
    """One row of the settings table."""

    name: str  # attribute on Settings and the long option (with '_' -> '-')
    env: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def option(self) -> str:
        return self.name.replace("_", "-")


LETS_ENCRYPT_PRODUCTION = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
CLOUDFLARE_API_BASE = "https://api.cloudflare.com/client/v4"

SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", "AEGIS_DATA_DIR", "data", _parse_path,
                "Directory of the SQLite database aegis.db (created 0700)."),
    SettingSpec("ssl_cache_dir", "AEGIS_SSL_CACHE_DIR", ".cache/ssl", _parse_path,
                "Directory of the local CA, its certificates and the ACME cache (0700)."),
    SettingSpec("ssl_key", "AEGIS_SSL_KEY", None, _parse_master_key,
                "64 hex characters: the AES-256-GCM master key for private keys at rest. "
                "Unset: generated on first run and stored in the database.", secret=True),
    SettingSpec("http_listen", "AEGIS_HTTP_LISTEN", "tcp:80", _parse_endpoint,
                "Twisted endpoint of the plain HTTP listener (ACME challenges, redirects)."),
    SettingSpec("https_listen", "AEGIS_HTTPS_LISTEN", "tcp:443", _parse_endpoint,
                "Twisted endpoint of the HTTPS listener (Aegis adds TLS itself)."),
    SettingSpec("admin_listen", "AEGIS_ADMIN_LISTEN", "tcp:9443:interface=127.0.0.1",
                _parse_endpoint, "Twisted endpoint of the admin API and UI (TLS added by Aegis)."),
    SettingSpec("admin_token", "AEGIS_ADMIN_TOKEN", None, _parse_token,
                "Bearer token of the admin API. Unset: generated on first run, written to "
                "<data dir>/admin-token (0600), only its hash kept.", secret=True),
    SettingSpec("shutdown_timeout", "AEGIS_SHUTDOWN_TIMEOUT", "10", _parse_seconds,
                "Seconds in-flight requests get to finish after SIGTERM."),
    SettingSpec("tls_handshake_timeout", "AEGIS_TLS_HANDSHAKE_TIMEOUT", "10", _parse_seconds,
                "Seconds a TLS handshake may take before the connection is closed."),
    SettingSpec("proxy_connect_timeout", "AEGIS_PROXY_CONNECT_TIMEOUT", "5", _parse_seconds,
                "Seconds to connect to an upstream before answering 504 "
                "(a refused connection is 502 at once)."),
    SettingSpec("proxy_upstream_timeout", "AEGIS_PROXY_UPSTREAM_TIMEOUT", "60", _parse_seconds,
                "Seconds an upstream may stay silent before answering 504."),
    SettingSpec("proxy_header_timeout", "AEGIS_PROXY_HEADER_TIMEOUT", "10", _parse_seconds,
                "Seconds a client has to send a complete request head (slowloris guard)."),
    SettingSpec("public_https_port", "AEGIS_PUBLIC_HTTPS_PORT", "", _parse_public_port,
                "Port that HTTP-to-HTTPS redirects name, when clients reach the HTTPS listener "
                "through another port (Docker -p 443:8443, a load balancer). Empty: the "
                "listener's own; 443 is left out of the URL."),
    SettingSpec("proxy_keepalive_timeout", "AEGIS_PROXY_KEEPALIVE_TIMEOUT", "75",
                _parse_seconds, "Seconds an idle client keep-alive connection stays open."),
    SettingSpec("proxy_body_timeout", "AEGIS_PROXY_BODY_TIMEOUT", "60", _parse_seconds,
                "Seconds a client may pause while sending a request body."),
    SettingSpec("proxy_request_timeout", "AEGIS_PROXY_REQUEST_TIMEOUT", "0",
                partial(_parse_seconds, off=True, most=86400),
                "Seconds a client has to send a whole request, head and body "
                "(0: no limit)."),
    SettingSpec("proxy_via", "AEGIS_PROXY_VIA", "", _parse_via,
                "Pseudonym for a Via header on proxied requests and responses, e.g. aegis "
                "(empty: no Via)."),
    SettingSpec("acme_directory", "AEGIS_ACME_DIRECTORY", LETS_ENCRYPT_PRODUCTION, _parse_url,
                "ACME directory URL (Let's Encrypt staging: " + LETS_ENCRYPT_STAGING + ")."),
    SettingSpec("acme_email", "AEGIS_ACME_EMAIL", "", _parse_email,
                "Contact email of the ACME account (optional)."),
    SettingSpec("acme_ca_bundle", "AEGIS_ACME_CA_BUNDLE", None, _parse_existing_file,
                "PEM bundle trusted for the ACME server's HTTPS (private CAs, Pebble)."),
    SettingSpec("acme_key_type", "AEGIS_ACME_KEY_TYPE", "ecdsa-p256", _parse_key_type,
                "Key type of ACME certificates: ecdsa-p256 (default) or rsa-2048."),
    SettingSpec("cloudflare_api_base", "AEGIS_CLOUDFLARE_API_BASE", CLOUDFLARE_API_BASE,
                _parse_url, "Base URL of the Cloudflare API v4."),
    SettingSpec("access_log", "AEGIS_ACCESS_LOG", "-", _parse_access_log,
                "Where the access log goes: a file path (appended, reopened on SIGUSR1), "
                "- (stdout) or off."),
    SettingSpec("access_log_format", "AEGIS_ACCESS_LOG_FORMAT", "combined",
                _one_of("combined", "json"),
                "Access log line format: combined (nginx's) or json (one object per line)."),
    SettingSpec("log_level", "AEGIS_LOG_LEVEL", "info", _one_of("debug", "info", "warn", "error"),
                "Lowest level of the application log on stdout: debug, info, warn or error."),
    SettingSpec("log_format", "AEGIS_LOG_FORMAT", "text", _one_of("text", "json"),
                "Application log format: text, or json (one object per line, for journald "
                "and ELK)."),
    SettingSpec("database_url", "AEGIS_DATABASE_URL", "", _parse_database_url,
                "postgresql:// URL of a shared PostgreSQL database, instead of the SQLite "
                "file in the data directory (several nodes may share it; see "
                "docs/storage.md). Empty: SQLite.", secret=True),
    SettingSpec("acme_profile", "AEGIS_ACME_PROFILE", "", _parse_acme_profile,
                "ACME profile of new orders unless a host names one (Let's Encrypt: classic, "
                "tlsserver, shortlived). Empty: the CA's default."),
    SettingSpec("acme_challenge", "AEGIS_ACME_CHALLENGE", "http-01", _parse_acme_challenge,
                "ACME challenge: http-01 (port 80), tls-alpn-01 (the HTTPS listener answers "
                "acme-tls/1; port 80 may be closed) or auto (HTTP-01, then TLS-ALPN-01 for a "
                "name whose HTTP-01 validation failed)."),
    SettingSpec("acme_eab_kid", "AEGIS_ACME_EAB_KID", "", _parse_eab_kid,
                "Key identifier for external account binding (ZeroSSL, Google Trust "
                "Services, private CAs); with AEGIS_ACME_EAB_HMAC_KEY."),
    SettingSpec("acme_eab_hmac_key", "AEGIS_ACME_EAB_HMAC_KEY", "", _parse_eab_hmac_key,
                "HMAC key for external account binding, base64url as the CA gives it "
                "(never logged or stored).", secret=True),
    SettingSpec("acme_fallback_directories", "AEGIS_ACME_FALLBACK_DIRECTORIES", "",
                _parse_directories, "Comma-separated ACME directories tried in order when "
                "AEGIS_ACME_DIRECTORY's CA is down or rate-limits (each its own account)."),
    # Monitoring (docs/monitoring.md; parsers in aegis.monitor.options)
    SettingSpec("monitor_interval", "AEGIS_MONITOR_INTERVAL", "60", _mon.seconds,
                "Seconds between expiry monitor checks (store heartbeat, alerts)."),
    SettingSpec("monitor_warning_days", "AEGIS_MONITOR_WARNING_DAYS", "30", _mon.days,
                "Manual certificates: warning this many days before expiry (or at the "
                "fraction, if smaller)."),
    SettingSpec("monitor_warning_fraction", "AEGIS_MONITOR_WARNING_FRACTION", "1/3",
                _mon.fraction, "Manual certificates: warning when this share of the lifetime "
                "is left, if smaller than the days."),
    SettingSpec("monitor_critical_days", "AEGIS_MONITOR_CRITICAL_DAYS", "7", _mon.days,
                "Every certificate: critical this many days before expiry (or at the "
                "fraction, if smaller)."),
    SettingSpec("monitor_critical_fraction", "AEGIS_MONITOR_CRITICAL_FRACTION", "0.1",
                _mon.fraction, "Critical when this share of the lifetime is left, if smaller "
                "than the days."),
    SettingSpec("monitor_renewal_margin", "AEGIS_MONITOR_RENEWAL_MARGIN", "86400",
                _mon.seconds, "Seconds past the planned renewal before a renewed certificate "
                "is overdue (at most 5% of its lifetime)."),
    SettingSpec("monitor_failures", "AEGIS_MONITOR_FAILURES", "3", _mon.count,
                "Consecutive failed renewals that put a certificate in warning."),
    SettingSpec("alert_webhook_urls", "AEGIS_ALERT_WEBHOOK_URLS", "", _mon.urls,
                "Comma-separated URLs that get each alert as a signed JSON POST (empty: "
                "none).", secret=True),
    SettingSpec("alert_webhook_secret", "AEGIS_ALERT_WEBHOOK_SECRET", None, _mon.secret,
                "HMAC-SHA256 key of the X-Aegis-Signature header.", secret=True),
    SettingSpec("alert_smtp_host", "AEGIS_ALERT_SMTP_HOST", "", _mon.host,
                "SMTP server for alert mail (empty: no mail)."),
    SettingSpec("alert_smtp_port", "AEGIS_ALERT_SMTP_PORT", "587", _mon.port,
                "SMTP server port."),
    SettingSpec("alert_smtp_security", "AEGIS_ALERT_SMTP_SECURITY", "starttls",
                _mon.security, "starttls (required), tls (port 465) or none (local relay)."),
    SettingSpec("alert_smtp_username", "AEGIS_ALERT_SMTP_USERNAME", "", _mon.username,
                "SMTP user name (empty: no authentication)."),
    SettingSpec("alert_smtp_password", "AEGIS_ALERT_SMTP_PASSWORD", None, _mon.secret,
                "SMTP password (sent only over TLS).", secret=True),
    SettingSpec("alert_smtp_from", "AEGIS_ALERT_SMTP_FROM", "", _mon.address,
                "Sender address of alert mail."),
    SettingSpec("alert_smtp_to", "AEGIS_ALERT_SMTP_TO", "", _mon.addresses,
                "Comma-separated recipients of alert mail."),
    SettingSpec("alert_smtp_ca_bundle", "AEGIS_ALERT_SMTP_CA_BUNDLE", None,
                _parse_existing_file,
                "PEM bundle trusted for the SMTP server's TLS (unset: system roots)."),
    SettingSpec("metrics_listen", "AEGIS_METRICS_LISTEN", "", _mon.endpoint_or_off,
                "Twisted endpoint of a plain-HTTP /metrics listener without a token, e.g. "
                "tcp:9464:interface=127.0.0.1 (empty: only the admin listener's /metrics)."),
)


@dataclass(frozen=True)
class Settings:
    """Validated settings. ``repr`` never shows secrets."""

    data_dir: Path = Path("data")
    ssl_cache_dir: Path = Path(".cache/ssl")
    ssl_key: MasterKey | None = None
    http_listen: str = "tcp:80"
    https_listen: str = "tcp:443"
    admin_listen: str = "tcp:9443:interface=127.0.0.1"
    admin_token: str | None = field(default=None, repr=False)
    shutdown_timeout: float = 10.0
    tls_handshake_timeout: float = 10.0
    proxy_connect_timeout: float = 5.0
    proxy_upstream_timeout: float = 60.0
    proxy_header_timeout: float = 10.0
    public_https_port: int | None = None
    proxy_keepalive_timeout: float = 75.0
    proxy_body_timeout: float = 60.0
    proxy_request_timeout: float = 0.0
    proxy_via: str = ""
    acme_directory: str = LETS_ENCRYPT_PRODUCTION
    acme_email: str = ""
    acme_ca_bundle: Path | None = None
    acme_key_type: str = "ecdsa-p256"
    cloudflare_api_base: str = CLOUDFLARE_API_BASE
    access_log: str = "-"
    access_log_format: str = "combined"
    log_level: str = "info"
    log_format: str = "text"
    database_url: str | None = field(default=None, repr=False)
    acme_profile: str = ""
    acme_challenge: str = "http-01"
    acme_eab_kid: str = ""
    acme_eab_hmac_key: str = field(default="", repr=False)
    acme_fallback_directories: tuple[str, ...] = ()
    monitor_interval: float = 60.0
    monitor_warning_days: float = 30.0
    monitor_warning_fraction: float = 1 / 3
    monitor_critical_days: float = 7.0
    monitor_critical_fraction: float = 0.1
    monitor_renewal_margin: float = 86400.0
    monitor_failures: int = 3
    alert_webhook_urls: tuple[str, ...] = field(default=(), repr=False)
    alert_webhook_secret: str | None = field(default=None, repr=False)
    alert_smtp_host: str = ""
    alert_smtp_port: int = 587
    alert_smtp_security: str = "starttls"
    alert_smtp_username: str = ""
    alert_smtp_password: str | None = field(default=None, repr=False)
    alert_smtp_from: str = ""
    alert_smtp_to: tuple[str, ...] = ()
    alert_smtp_ca_bundle: Path | None = None
    metrics_listen: str = ""

    @property
    def database_path(self) -> Path:
        return self.data_dir / "aegis.db"

    @classmethod
    def load(
        cls,
        options: Mapping[str, str | None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting from command-line ``options``, then ``environ``, then default.

        @raise ConfigError: naming the first setting whose value is unusable.
        """
        options = options or {}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in SETTINGS:
            raw = options.get(spec.name)
            origin = f"--{spec.option}"
            if raw is None and spec.env in environ:
                raw, origin = environ[spec.env], spec.env
            if raw is None:
                raw, origin = spec.default, f"{spec.env} (default)"
            if raw is None:
                continue
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                shown = "(hidden)" if spec.secret else repr(raw)
                raise ConfigError(f"{origin}={shown}: {exc}") from None
        return cls(**values)
