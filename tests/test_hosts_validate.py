"""Host settings validation: every refusal names its field; nothing odd gets through."""

from __future__ import annotations

from typing import Any

import pytest

from aegis.admin._errors import ApiError
from aegis.hosts.upstream import InvalidUpstream, parse_upstream
from aegis.hosts.validate import HOST_SCHEMA, host_request

BASE = {"domain": "app.example.com", "upstream": "http://127.0.0.1:3000"}


def refused(body: dict[str, Any], current: Any = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        host_request(HOST_SCHEMA.check(body), current)
    return caught.value


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("HTTP://Backend:80/", "http://backend"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("https://app.internal", "https://app.internal"),
        ("http://grafana", "http://grafana"),
    ],
)
def test_upstreams_accepted(text: str, url: str) -> None:
    assert parse_upstream(text).url == url


@pytest.mark.parametrize(
    "text",
    ["ftp://x", "http://", "http://a b", "http://x:0", "http://x:65536", "http://x:1a",
     "http://user@x", "http://x/path", "http://x?q", "http://x#f", "http://[::1", "127.0.0.1:80",
     "http://a;touch /tmp/x", "http://$(id)", "http://x\n", "http://300.1.1.1", "http://-a-"],
)
def test_upstreams_refused(text: str) -> None:
    with pytest.raises(InvalidUpstream):
        parse_upstream(text)


def test_defaults_and_normalisation() -> None:
    request = host_request(HOST_SCHEMA.check({
        "domain": "APP.Example.COM.", "aliases": ["bücher.example"], "upstream": "http://b:1/",
    }))
    fields = request.fields
    assert fields.domain == "app.example.com"
    assert fields.aliases == ("xn--bcher-kva.example",)
    assert fields.upstream == "http://b:1"
    assert (fields.ssl_mode, fields.tls_min_version, fields.upstream_tls_verify) == (
        "none", "1.2", True)
    assert request.inline is None


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"upstream": "http://x"}, "domain", 400),
        ({"domain": "a.com"}, "upstream", 400),
        ({**BASE, "domain": "a.com;touch /tmp/x"}, "domain", 400),
        ({**BASE, "aliases": ["ok.example.com", "$(id)"]}, "aliases[1]", 400),
        ({**BASE, "aliases": ["app.example.com"]}, "aliases", 422),
        ({**BASE, "upstream": "http://x/y"}, "upstream", 400),
        ({**BASE, "tls_min_version": "1.1"}, "tls_min_version", 400),
        ({**BASE, "tls_min_version": "2.0"}, "tls_min_version", 400),
        ({**BASE, "ssl_mode": "custom"}, "ssl_cert_id", 422),
        ({**BASE, "ssl_mode": "letsencrypt", "ssl_cert_id": 3}, "ssl_cert_id", 422),
        ({**BASE, "ssl_mode": "none", "ssl_cert_pem": "x", "ssl_key_pem": "y"}, "ssl_cert_pem",
         422),
        ({**BASE, "ssl_mode": "custom", "ssl_cert_pem": "x"}, "ssl_key_pem", 422),
        ({**BASE, "ssl_mode": "custom", "ssl_cert_id": 1, "ssl_cert_pem": "x",
          "ssl_key_pem": "y"}, "ssl_cert_pem", 422),
        ({**BASE, "ssl_mode": "letsencrypt", "aliases": ["*.example.com"]}, "aliases[0]", 422),
        ({**BASE, "hsts_max_age": -1}, "hsts_max_age", 400),
        ({**BASE, "hsts_enabled": True, "hsts_preload": True}, "hsts_preload", 422),
        ({**BASE, "hsts_enabled": True, "hsts_preload": True, "hsts_include_subdomains": True,
          "hsts_max_age": 86400}, "hsts_preload", 422),
        ({**BASE, "force_https": "yes"}, "force_https", 400),
        ({**BASE, "colour": "blue"}, "colour", 400),
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], field: str, status: int) -> None:
    error = refused(body)
    assert (error.field, error.status) == (field, status), error.message


def test_preload_explains_irreversibility() -> None:
    error = refused({**BASE, "hsts_enabled": True, "hsts_preload": True})
    assert "irreversible" in error.message


def test_preload_accepted_with_its_requirements() -> None:
    fields = host_request(HOST_SCHEMA.check({
        **BASE, "hsts_enabled": True, "hsts_preload": True, "hsts_include_subdomains": True,
        "hsts_max_age": 63072000,
    })).fields
    assert fields.hsts_preload


def test_patch_keeps_unnamed_fields_and_switching_mode_frees_binding() -> None:
    current = host_request(HOST_SCHEMA.check({
        **BASE, "ssl_mode": "custom", "ssl_cert_id": 4, "force_https": True,
    })).fields
    changed = host_request(HOST_SCHEMA.check({"ssl_mode": "letsencrypt"}), current).fields
    assert changed.ssl_mode == "letsencrypt" and changed.ssl_cert_id is None
    assert changed.force_https and changed.domain == "app.example.com"
    renamed = host_request(HOST_SCHEMA.check({"upstream": "http://other:1"}), current).fields
    assert renamed.ssl_cert_id == 4 and renamed.upstream == "http://other:1"


def test_inline_certificate_is_carried() -> None:
    request = host_request(HOST_SCHEMA.check({
        **BASE, "ssl_mode": "custom", "ssl_cert_pem": "C", "ssl_key_pem": "K",
        "ssl_key_passphrase": "p",
    }))
    assert request.inline is not None
    assert (request.inline.cert_pem, request.inline.key_pem, request.inline.passphrase) == (
        "C", "K", "p")
    assert "K" not in repr(request.fields)
