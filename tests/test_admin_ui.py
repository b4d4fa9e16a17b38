"""The admin web UI: static files behind the Host guard, a strict CSP, and no drift from
the API it calls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aegis.admin import AdminAPI
from aegis.admin._ui import FILES
from tests.test_admin_api import Client, make_api
from tests.test_admin_api import cache as cache

UI = Path(__file__).resolve().parent.parent / "aegis" / "admin" / "ui"


@pytest.mark.parametrize("path", ["/", "/ui/index.html", "/ui/app.js", "/ui/style.css"])
def test_files_served_without_token_with_strict_csp(cache: Path, path: str) -> None:
    response, body = Client(make_api(cache)).call("GET", path, token=None)
    assert response.code == 200
    csp = response.headers.getRawHeaders("Content-Security-Policy")[0]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers.getRawHeaders("X-Content-Type-Options") == ["nosniff"]
    assert body


@pytest.mark.parametrize("name", ["../_app.py", "..%2f_app.py", "secret.txt", "app.js.map"])
def test_only_the_known_files(cache: Path, name: str) -> None:
    response, body = Client(make_api(cache)).call("GET", "/ui/" + name, token=None)
    # A name with ../ leaves /ui/ and reaches the guarded API router instead: 401 there.
    assert response.code in (401, 404)
    assert b"import" not in body


def test_foreign_host_refused(cache: Path) -> None:
    response, _ = Client(make_api(cache)).call(
        "GET", "/", token=None, headers={"Host": "evil.example:9443"}
    )
    assert response.code == 403


def test_no_inline_script_and_every_file_exists() -> None:
    html = (UI / "index.html").read_text(encoding="utf-8")
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert " on" + "click=" not in html
    for name in FILES:
        assert (UI / name).is_file()


def test_the_hidden_attribute_wins_over_display_rules() -> None:
    """The UI hides the navigation (and the views) with ``hidden`` until sign-in; a rule
    such as ``nav { display: flex }`` would otherwise show them on the sign-in page."""
    css = (UI / "style.css").read_text(encoding="utf-8")
    assert re.search(r"\[hidden\]\s*\{\s*display:\s*none\s*!important;?\s*\}", css)
    html = (UI / "index.html").read_text(encoding="utf-8")
    assert '<nav id="nav" hidden>' in html


def test_every_api_call_of_the_ui_is_a_real_route() -> None:
    script = (UI / "app.js").read_text(encoding="utf-8")
    calls = re.findall(r'api\("(GET|POST|PUT|PATCH|DELETE)", [`"](/[^`"$]*)', script)
    assert calls
    served = {(op.method, op.path.split("<")[0].rstrip("/")) for op in AdminAPI.operations}
    for method, path in calls:
        prefix = "/api/v1" + path.rstrip("/")
        assert any(m == method and (p == prefix or p.startswith(prefix)) for m, p in served), (
            method, path)
