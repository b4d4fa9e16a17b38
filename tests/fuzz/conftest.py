"""Hypothesis profiles for the fuzz tests.

``ci`` (the default): derandomised, so every run tries the same examples and a failure
reproduces; a bounded number of examples so the whole of tests/fuzz runs in well under a
minute; no per-example deadline (CI machines are shared and slow). ``long``: random, many
examples, for a local hunt: ``AEGIS_FUZZ_PROFILE=long pytest tests/fuzz``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("AEGIS_FUZZ_PROFILE", "ci"))
