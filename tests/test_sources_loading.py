"""The source registry loads every source even when one source module was imported first
(a test or a tool importing ``aegis.sources.acme`` alone used to leave the others out: the
certificate schema's ``source`` enum, uploads and the store then knew only that one)."""

from __future__ import annotations

import subprocess
import sys

from tests.aegis_process import ROOT

PROBE = """
import aegis.sources.acme
from aegis.certs import sources
known = set(sources.names())  # asked before anything else imported the other sources
sources.upload_source()
import importlib
from aegis.sources import SOURCE_MODULES
expected = {importlib.import_module(module).SPEC.name for module in SOURCE_MODULES}
assert known == expected, (known, expected)
print("ok")
"""


def test_one_source_imported_first_still_loads_all() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                            text=True, check=False, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
