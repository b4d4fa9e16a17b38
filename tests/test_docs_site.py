"""The docs site: generated pages current, every setting and route in them, the MkDocs
build clean with warnings as errors, every page in the navigation."""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aegis.admin._app import AdminAPI
from aegis.config import SETTINGS
from tests.aegis_process import ROOT

GEN_DOCS = ROOT / "scripts" / "gen-docs"


def _generator() -> dict[str, Any]:
    return runpy.run_path(str(GEN_DOCS), run_name="gen_docs")


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN_DOCS), "--check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_generated_pages_are_current() -> None:
    result = _check()
    assert result.returncode == 0, result.stderr


def test_a_stale_page_is_named(tmp_path: Path) -> None:
    for name in ("configuration.md", "api-reference.md"):
        shutil.copy(ROOT / "docs" / name, tmp_path / name)
    page = tmp_path / "configuration.md"
    page.write_text(page.read_text().replace("AEGIS_ACCESS_LOG", "AEGIS_ACCESS_LOGS", 1))
    result = _check("--docs", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{page} is not current: run python scripts/gen-docs"


def test_configuration_reference_has_every_setting() -> None:
    page = _generator()["configuration_page"]()
    for spec in SETTINGS:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{spec.env}` |"))
        assert f"`--{spec.option}`" in row and spec.help.split(".")[0] in row


def test_api_reference_has_every_route() -> None:
    page = _generator()["api_page"]()
    for op in AdminAPI.operations:
        assert f"### `{op.method} {op.openapi_path}`" in page, op.operation_id


def test_every_page_is_in_the_navigation() -> None:
    nav = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert pages == nav


def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="install the docs extra: pip install -e .[docs]")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "configuration" / "index.html").exists()
    assert "AEGIS_ACCESS_LOG" in (tmp_path / "configuration" / "index.html").read_text()
