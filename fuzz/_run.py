"""Run one of the targets in tests/fuzz/targets.py under atheris (libFuzzer).

The same one-input functions the hypothesis tests use; atheris adds coverage guidance and
runs for as long as you let it. Not part of CI (atheris needs a matching clang build).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fuzz(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["aegis", "tests.fuzz"]):
        from tests.fuzz import targets
    atheris.Setup(sys.argv, getattr(targets, name))
    atheris.Fuzz()
