"""Policy test fixtures: the shipped example policy, an engine, a pipeline run of a crafted pcap into SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from correlator.pipeline import Pipeline
from correlator.policy import PolicyDetector, PolicyEngine, load_policy
from sensors import capture
from sensors.engine import Sensor

ROOT = Path(__file__).resolve().parents[2]
BACKBONE = ROOT / "rules" / "policy" / "national-backbone.yml"


@pytest.fixture(scope="session")
def policy():
    return load_policy(BACKBONE)


@pytest.fixture
def engine(policy):
    return PolicyEngine(policy)


def run_pcap(pcap: Path, store, engine: PolicyEngine, sensor_name: str = "backbone-1"):
    """The real sensor on the pcap, then the pipeline (policy enrichment and detection) into the store."""
    sensor = Sensor(sensor_name=sensor_name, source=str(pcap))
    pipeline = Pipeline(store, enrichers=[engine.enrich], detectors=[PolicyDetector(engine)])
    return pipeline.run(sensor.run(capture.read_file(str(pcap))))
