"""The shipped Prometheus rules and Grafana dashboard: valid, and about series Aegis exports.

``promtool`` comes with Debian's ``prometheus`` package (a test peer in scripts/test)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from aegis.monitor import metrics
from tests.aegis_process import ROOT

RULES = ROOT / "contrib" / "prometheus" / "aegis-rules.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "aegis-rules.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "aegis-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install -y prometheus")


def exported_names() -> set[str]:
    """Every metric name the collector source declares, with the suffixes Prometheus adds."""
    source = (ROOT / "aegis" / "monitor" / "metrics.py").read_text()
    names = set(re.findall(r'"((?:aegis|certmanager)_[a-z_]+)"', source))
    counters = set(re.findall(r'CounterMetricFamily\(\s*"([a-z_]+)"', source))
    histograms = set(re.findall(r'HistogramMetricFamily\(\s*"([a-z_]+)"', source))
    return (names | {n + "_total" for n in counters}
            | {n + suffix for n in histograms for suffix in ("_bucket", "_sum", "_count")})


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_the_rules_fire_in_promtools_unit_tests() -> None:
    result = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)],
                            capture_output=True, text=True, check=False, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_and_dashboard_use_only_exported_series() -> None:
    known = exported_names() | {"up"}
    assert "aegis_certificate_expiration_timestamp_seconds" in known
    for path in (RULES, DASHBOARD):
        used = set(re.findall(r"\b((?:aegis|certmanager)_[a-z_]+)", path.read_text()))
        assert used, path
        assert used <= known, (path.name, used - known)


def test_dashboard_is_grafana_json_with_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["panels"]
    assert all(panel["targets"] for panel in board["panels"] if panel["type"] != "row")
    assert metrics.CONTENT_TYPE.startswith("text/plain; version=0.0.4")
