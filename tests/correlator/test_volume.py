"""Volume theft: scapy-crafted uploads through the real sensor, the shipped policy and the standard pipeline. A host
of the MoI enclave that sends a day's worth of small uploads and then 10 MB to the internet in one hour alerts once,
with the flow's policy label; a backup server whose normal is 10 MB an hour, the same upload inside the organization
and every real capture stay silent. The hourly baseline is checked against a recomputation.

Regenerate the rule's samples (after a deliberate change): ``.venv/bin/python -m tests.correlator.test_volume``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from correlator.events import normalize
from correlator.policy import PolicyEngine, load_policy
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaDetector, SigmaEngine
from correlator.sigma.loader import load_placeholders
from correlator.volume import HALF_LIFE_HOURS, VolumeEnricher
from tests.policy.traffic import session, write

T0 = 1_793_000_000.0 - 1_793_000_000.0 % 3600  # an hour boundary
ENCLAVE, BACKUP, OUTSIDE, INSIDE = "10.20.200.5", "10.30.0.9", "198.51.100.7", "10.20.0.7"
RULE = "net_volume_exfil"
TITLE = "Volume Theft - Outbound Bytes To Outside The Organization Far Above The Host's Normal"
BACKBONE = Path(__file__).resolve().parents[2] / "rules" / "policy" / "national-backbone.yml"
JUMBO = 8960  # payload per packet (jumbo frames keep the crafted captures small)


def upload(client: str, server: str, start: float, nbytes: int, sport: int) -> list:
    chunks = [(0, b"d" * min(JUMBO, nbytes - i)) for i in range(0, nbytes, JUMBO)]
    return session(client, server, 443, start, [*chunks, (1, b"ok")], sport=sport)


def hourly(client: str, server: str, hours: int, nbytes: int, first_sport: int) -> list:
    return [p for h in range(hours) for p in upload(client, server, T0 + h * 3600 + 600, nbytes, first_sport + h)]


def positive_traffic() -> list:
    """30 hours of 20 kB uploads, then 10 MB in the 31st hour."""
    return hourly(ENCLAVE, OUTSIDE, 30, 20_000, 41000) + upload(ENCLAVE, OUTSIDE, T0 + 30 * 3600 + 900, 10_000_000,
                                                                  42000)


def negative_traffic() -> list:
    """A backup server whose normal is 10 MB an hour; the enclave host uploading 10 MB inside its organization."""
    return (hourly(BACKUP, OUTSIDE, 31, 10_000_000, 43000) + hourly(ENCLAVE, OUTSIDE, 30, 20_000, 41000)
            + upload(ENCLAVE, INSIDE, T0 + 30 * 3600 + 900, 10_000_000, 44000))


def flows(packets: list, tmp: Path, name: str) -> list[dict]:
    """Sensor flows, classified by the shipped policy and annotated by the volume enricher."""
    from sensors.capture import read_file
    from sensors.engine import Sensor

    events = [normalize(e) for e in Sensor("sample").run(read_file(str(write(tmp / name, packets))))]
    PolicyEngine(load_policy(BACKBONE)).enrich(events)
    VolumeEnricher()(events)
    return [e for e in events if e["event.dataset"] == "soc.flow"]


@pytest.fixture(scope="module")
def shipped() -> SigmaEngine:
    return SigmaEngine.load([SHIPPED_RULES], "ecs", load_placeholders([SHIPPED_RULES]))


def volume_alerts(engine: SigmaEngine, events: list[dict]) -> list[dict]:
    det = SigmaDetector(engine)
    by_id = {a["soc.alert.uuid"]: a for a in det.detect(events) + det.flush() if a["soc.alert.rule.name"] == TITLE}
    return list(by_id.values())


def test_exfiltration_from_the_enclave_alerts_once_with_its_label(tmp_path: Path, shipped: SigmaEngine) -> None:
    events = flows(positive_traffic(), tmp_path, "p.pcap")
    alerts = volume_alerts(shipped, events)
    assert len(alerts) == 1, [a["soc.alert.reason"] for a in alerts]
    a = alerts[0]
    big = next(e for e in events if e["source.bytes"] > 10_000_000)
    assert (a["source.ip"], a["destination.ip"]) == (ENCLAVE, OUTSIDE)
    assert a["soc.volume.hour_bytes"] == big["source.bytes"] and a["soc.volume.hours"] == 30
    # the flow's label from the policy (the enclave's registry: top-secret), the highest of the alert's inputs
    assert (a["gov.label.level"], a["gov.label.rank"]) == (big["gov.label.level"], big["gov.label.rank"]) == (
        "top-secret", 3)
    assert a["gov.destination.zone"] == "internet" and "level=top-secret" in a["soc.alert.reason"]
    small = [e["source.bytes"] for e in events if e is not big]
    assert len(small) == 30 and a["soc.volume.baseline"] == pytest.approx(_ewma(small), rel=1e-6)
    assert a["soc.volume.ratio"] == pytest.approx(big["source.bytes"] / 65536, rel=0.01)  # floor of the baseline
    assert "T1048" in json.dumps(a["soc.alert.rule.threat"])


def _ewma(hours: list[int]) -> float:
    """The documented baseline: bias-corrected exponentially weighted mean of the hourly totals."""
    d = 0.5 ** (1 / HALF_LIFE_HOURS)
    num = den = 0.0
    for x in hours:
        num, den = d * num + (1 - d) * x, d * den + (1 - d)
    return num / den


def test_normal_volume_and_inside_uploads_stay_silent(tmp_path: Path, shipped: SigmaEngine) -> None:
    events = flows(negative_traffic(), tmp_path, "n.pcap")
    assert volume_alerts(shipped, events) == []
    backup = [e for e in events if e["source.ip"] == BACKUP and "soc.volume.ratio" in e]
    assert len(backup) >= 31 and backup[-1]["soc.volume.ratio"] < 2  # annotated, judged on its own normal
    inside = next(e for e in events if e["destination.ip"] == INSIDE)
    assert inside["source.bytes"] > 10_000_000 and "soc.volume.hour_bytes" not in inside  # not outside the org


def test_bounded_hosts() -> None:
    v = VolumeEnricher(max_hosts=50)
    evs = [{"event.dataset": "soc.flow", "@timestamp": "2026-10-26T07:00:00Z", "source.ip": f"10.20.1.{i}",
            "destination.ip": OUTSIDE, "source.bytes": 100, "gov.source.organization": "moi"} for i in range(200)]
    v(evs)
    assert v.state() == {"hosts": 50, "seen": 200, "late": 0, "evicted_hosts": 150}


@pytest.mark.corpus
def test_real_captures_stay_silent(corpus: Path, shipped: SigmaEngine) -> None:
    from sensors.capture import read_file
    from sensors.engine import Sensor

    engine = PolicyEngine(load_policy(BACKBONE))
    for pcap in sorted((corpus / "pcaps").glob("*.pcap*")) + sorted((corpus / "ddos").glob("*.pcap*")):
        events = [normalize(e) for e in Sensor("sample").run(read_file(str(pcap)))]
        engine.enrich(events)
        VolumeEnricher()(events)
        assert volume_alerts(shipped, events) == [], pcap.name


# --- samples -------------------------------------------------------------------------------------------------------
def test_samples_are_the_enrichers_output(tmp_path: Path) -> None:
    d = SHIPPED_RULES / "tests" / RULE
    for name, build in (("positive", positive_traffic), ("negative", negative_traffic)):
        shipped = [json.loads(x) for x in (d / f"{name}.ndjson").read_text(encoding="utf-8").splitlines()]
        assert shipped == [e for e in flows(build(), tmp_path, f"{name}.pcap") if "soc.volume.ratio" in e], name


def write_samples(tmp: Path) -> None:
    d = SHIPPED_RULES / "tests" / RULE
    d.mkdir(exist_ok=True)
    for name, build in (("positive", positive_traffic), ("negative", negative_traffic)):
        lines = [json.dumps(e) + "\n" for e in flows(build(), tmp, f"{name}.pcap") if "soc.volume.ratio" in e]
        (d / f"{name}.ndjson").write_text("".join(lines), encoding="utf-8")
    (d / "info.yml").write_text(
        "regression_tests_info:\n"
        f"    - name: Positive samples\n      type: ndjson\n      match_count: 1\n"
        f"      path: tests/{RULE}/positive.ndjson\n"
        f"    - name: Negative samples\n      type: ndjson\n      match_count: 0\n"
        f"      path: tests/{RULE}/negative.ndjson\n",
        encoding="utf-8")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmpdir:
        write_samples(Path(tmpdir))
