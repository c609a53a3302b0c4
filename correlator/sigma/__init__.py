"""Sigma detection: pySigma loading and pipelines, a Python-code backend, the streaming matcher, correlations."""

from pathlib import Path

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules" / "sigma"
