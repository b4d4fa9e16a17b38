"""Settings: defaults from the spec, precedence, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from aegis.config import SETTINGS, ConfigError, Settings


def test_spec_defaults() -> None:
    settings = Settings.load({}, {})
    assert settings.ssl_cache_dir == Path(".cache/ssl")
    assert settings.data_dir == Path("data")
    assert settings.database_path == Path("data/aegis.db")
    assert settings.http_listen == "tcp:80"
    assert settings.https_listen == "tcp:443"
    assert settings.admin_listen == "tcp:9443:interface=127.0.0.1"
    assert settings.ssl_key is None and settings.admin_token is None


def test_every_setting_has_env_and_option() -> None:
    names = {spec.env for spec in SETTINGS}
    assert {"AEGIS_SSL_CACHE_DIR", "AEGIS_SSL_KEY", "AEGIS_DATA_DIR", "AEGIS_HTTP_LISTEN",
            "AEGIS_HTTPS_LISTEN", "AEGIS_ADMIN_LISTEN", "AEGIS_ADMIN_TOKEN",
            "AEGIS_ACME_DIRECTORY", "AEGIS_ACME_EMAIL", "AEGIS_ACME_CA_BUNDLE",
            "AEGIS_CLOUDFLARE_API_BASE"} <= names
    for spec in SETTINGS:
        assert spec.env == "AEGIS_" + spec.name.upper()
        assert hasattr(Settings(), spec.name)


def test_command_line_beats_environment() -> None:
    env = {"AEGIS_HTTP_LISTEN": "tcp:8080", "AEGIS_DATA_DIR": "/srv/aegis"}
    settings = Settings.load({"http_listen": "tcp:8081"}, env)
    assert settings.http_listen == "tcp:8081"
    assert settings.data_dir == Path("/srv/aegis")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AEGIS_HTTP_LISTEN": "tcp:notaport"}, "AEGIS_HTTP_LISTEN"),
        ({"AEGIS_HTTPS_LISTEN": "bogus:1"}, "AEGIS_HTTPS_LISTEN"),
        ({"AEGIS_ADMIN_LISTEN": "ssl:9443"}, "AEGIS_ADMIN_LISTEN"),
        ({"AEGIS_SSL_KEY": "zz"}, "AEGIS_SSL_KEY"),
        ({"AEGIS_ADMIN_TOKEN": "short"}, "AEGIS_ADMIN_TOKEN"),
        ({"AEGIS_SHUTDOWN_TIMEOUT": "-1"}, "AEGIS_SHUTDOWN_TIMEOUT"),
        ({"AEGIS_ACME_DIRECTORY": "ftp://x"}, "AEGIS_ACME_DIRECTORY"),
        ({"AEGIS_ACME_EMAIL": "not an email"}, "AEGIS_ACME_EMAIL"),
        ({"AEGIS_ACME_CA_BUNDLE": "/nonexistent/ca.pem"}, "AEGIS_ACME_CA_BUNDLE"),
        ({"AEGIS_PROXY_REQUEST_TIMEOUT": "-5"}, "AEGIS_PROXY_REQUEST_TIMEOUT"),
        ({"AEGIS_PROXY_BODY_TIMEOUT": "0"}, "AEGIS_PROXY_BODY_TIMEOUT"),
        ({"AEGIS_PROXY_VIA": "my proxy"}, "AEGIS_PROXY_VIA"),
        ({"AEGIS_PUBLIC_HTTPS_PORT": "70000"}, "AEGIS_PUBLIC_HTTPS_PORT"),
        ({"AEGIS_PUBLIC_HTTPS_PORT": "https"}, "AEGIS_PUBLIC_HTTPS_PORT"),
        ({"AEGIS_PROXY_VIA": "a\r\nX-Injected: 1"}, "AEGIS_PROXY_VIA"),
        ({"AEGIS_ACCESS_LOG": "/nonexistent/dir/access.log"}, "AEGIS_ACCESS_LOG"),
        ({"AEGIS_ACCESS_LOG": "/"}, "AEGIS_ACCESS_LOG"),
        ({"AEGIS_ACCESS_LOG": ""}, "AEGIS_ACCESS_LOG"),
        ({"AEGIS_ACCESS_LOG_FORMAT": "common"}, "AEGIS_ACCESS_LOG_FORMAT"),
        ({"AEGIS_LOG_LEVEL": "verbose"}, "AEGIS_LOG_LEVEL"),
        ({"AEGIS_LOG_FORMAT": "xml"}, "AEGIS_LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, env)
    message = str(caught.value)
    assert message.startswith(named)
    assert "\n" not in message


def test_secret_values_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, {"AEGIS_SSL_KEY": "secretsecret"})
    assert "secretsecret" not in str(caught.value)
    settings = Settings.load({}, {"AEGIS_ADMIN_TOKEN": "t" * 32, "AEGIS_SSL_KEY": "ab" * 32})
    assert "t" * 32 not in repr(settings) and "ab" * 32 not in repr(settings)


def test_proxy_request_timeout_and_via() -> None:
    defaults = Settings.load({}, {})
    assert defaults.proxy_request_timeout == 0.0 and defaults.proxy_via == ""
    assert defaults.proxy_body_timeout == 60.0
    chosen = Settings.load({}, {"AEGIS_PROXY_REQUEST_TIMEOUT": "300", "AEGIS_PROXY_VIA": "aegis"})
    assert chosen.proxy_request_timeout == 300.0 and chosen.proxy_via == "aegis"


def test_public_https_port() -> None:
    assert Settings.load({}, {}).public_https_port is None
    assert Settings.load({}, {"AEGIS_PUBLIC_HTTPS_PORT": "443"}).public_https_port == 443
