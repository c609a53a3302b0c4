"""Fuzz tests: Hypothesis on the real parsers. CI runs a sample (profile `ci`); `SOC_FUZZ_PROFILE=fuzz` runs 10,000
cases of each (`SOC_FUZZ_PROFILE=fuzz pytest tests/fuzz -m fuzz`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "suppress_health_check": list(HealthCheck), "database": None}
settings.register_profile("ci", max_examples=150, derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=10_000, **_COMMON)
settings.load_profile(os.environ.get("SOC_FUZZ_PROFILE", "ci"))
