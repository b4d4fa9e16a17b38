"""The README and docs stay true: every setting documented, every link resolves."""

from __future__ import annotations

import subprocess
import sys

from aegis.config import SETTINGS
from tests.aegis_process import ROOT


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for spec in SETTINGS:
        assert f"`{spec.env}`" in readme and f"`--{spec.option}`" in readme, spec.env


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "./scripts/run" in readme and "./scripts/test" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_docs_links_resolve() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check-docs")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
