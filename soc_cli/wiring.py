"""Assembles the pipeline the CLI runs: enrichers and detectors configured from the shipped rules and policy."""

from __future__ import annotations

from correlator.pipeline import Pipeline
from correlator.store import Store


def build_pipeline(store: Store, detect: bool = True) -> Pipeline:
    """The standard pipeline for `store`: classification enrichment and detection with the shipped rules."""
    return Pipeline(store, *_stages(detect))


def open_pipeline(uri: str | None, detect: bool = True) -> Pipeline:
    """The standard pipeline into the store at `uri`, opened only after the policy and rules loaded (a run refused
    for an invalid policy creates no store file). The store is `pipeline.store`."""
    stages = _stages(detect)
    from soc_cli.common import get_store

    return Pipeline(get_store(uri, create=True), *stages)


def _stages(detect: bool) -> tuple[list, list]:
    """Enrichers and detectors: classification (exits 2 if the policy is invalid), beaconing, shipped Sigma rules."""
    enrichers: list = []
    detectors: list = []
    from correlator.policy import PolicyDetector, PolicyEngine  # classification: gov.* on every event
    from soc_cli.common import active_policy

    policy_engine = PolicyEngine(active_policy())
    enrichers.append(policy_engine.enrich)
    from correlator.beacon import BeaconEnricher  # soc.beacon.* on connection flows (stored, so hunts see them)

    enrichers.append(BeaconEnricher())
    from correlator.flood import FloodEnricher  # soc.flood summaries per victim and attack kind (flood rules)

    enrichers.append(FloodEnricher())
    from correlator.volume import VolumeEnricher  # soc.volume.* on flows leaving the organization (after gov.*)

    enrichers.append(VolumeEnricher())
    if detect:
        detectors.append(PolicyDetector(policy_engine))
        from correlator.alerts import SensorAlertDetector  # Suricata alerts and Zeek notices join the queue

        detectors.append(SensorAlertDetector())
        from correlator.sigma.detector import shipped_detector  # Sigma: shipped rules, correlations, alerts

        detectors.append(shipped_detector())
    return enrichers, detectors
