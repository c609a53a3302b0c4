"""Alert storms (correlator.storm): crafted spoofed SSH brute force through `soc sensor pcap` and the shipped rules.

Truth is the traffic the test writes: which sources brute-force when, so how many per-key alerts and storm keys there
must be. Before the storm and after it ends, sources alert one by one; during it, one storm alert per victim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from typer.testing import CliRunner

from correlator.alerts import AlertFolder
from correlator.query import Query, Term
from correlator.sigma.engine import RuleInfo
from correlator.storm import DEFAULT, StormSpec, storm_spec

SSH_BRUTE = "ee25506a-2ce8-5b7e-a616-b4fcde8f1e76"
VICTIM = "10.0.5.5"
T0 = 1_780_000_000.0
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def brute(src: str, start: float, tries: int = 10) -> list:
    """`tries` rejected SSH connection attempts (SYN, RST) from `src` to the victim, 1 s apart."""
    out = []
    for i in range(tries):
        syn = ETH / IP(src=src, dst=VICTIM) / TCP(sport=40000 + i, dport=22, flags="S", seq=1)
        rst = ETH / IP(src=VICTIM, dst=src) / TCP(sport=22, dport=40000 + i, flags="RA", seq=0, ack=2)
        syn.time, rst.time = start + i, start + i + 0.001
        out += [syn, rst]
    return out


BEFORE = [f"198.18.1.{i}" for i in range(1, 4)]  # 3 attackers, an ordinary morning
SPOOFED = [f"203.0.{i // 250}.{i % 250 + 1}" for i in range(120)]  # 120 spoofed sources within 30 s
AFTER = [f"198.18.2.{i}" for i in range(1, 3)]  # 2 attackers after the storm has been quiet for a window


@pytest.fixture(scope="module")
def pcap(tmp_path_factory) -> Path:
    packets = [p for s in BEFORE for p in brute(s, T0)]
    packets += [p for n, s in enumerate(SPOOFED) for p in brute(s, T0 + 100 + n * 0.25)]
    packets += [p for s in AFTER for p in brute(s, T0 + 400)]
    path = tmp_path_factory.mktemp("storm") / "storm.pcap"
    wrpcap(str(path), sorted(packets, key=lambda p: p.time))
    return path


def _ingest(pcap: Path, db: Path) -> None:
    from soc_cli.main import app

    res = CliRunner().invoke(app, ["sensor", "pcap", str(pcap), "--store", f"sqlite:///{db}", "--sensor-name", "gw"])
    assert res.exit_code == 0, res.output


def _ssh_alerts(db: Path) -> list[dict]:
    from correlator.store import open_store

    store = open_store(f"sqlite:///{db}")
    try:
        return store.search_alerts(Query((Term("soc.alert.rule.uuid", SSH_BRUTE),)), 10_000)
    finally:
        store.close()


def test_spoofed_sources_fold_into_one_storm(pcap: Path, soc_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("SOC_POLICY", raising=False)
    db = soc_env / "soc.db"
    _ingest(pcap, db)
    alerts = _ssh_alerts(db)
    storms = [a for a in alerts if "soc.alert.storm.keys" in a]
    per_key = sorted(a["source.ip"] for a in alerts if "soc.alert.storm.keys" not in a)
    # before: each of the 3 alerts; storm: the first 50 spoofed sources alert (the threshold), the 51st starts it
    assert per_key == sorted(BEFORE + SPOOFED[:DEFAULT.keys] + AFTER)
    assert len(storms) == 1
    s = storms[0]
    folded = len(SPOOFED) - DEFAULT.keys
    assert (s["soc.alert.storm.field"], s["soc.alert.storm.value"], s["destination.ip"]) == (
        "destination.ip", VICTIM, VICTIM)
    assert s["soc.alert.storm.keys"] == s["soc.alert.storm.suppressed"] == s["soc.alert.storm.matches"] == folded
    assert s["soc.alert.storm.sample"][0] == f"destination.ip={VICTIM}, source.ip={SPOOFED[DEFAULT.keys]}"
    assert len(s["soc.alert.storm.sample"]) == 10
    assert s["soc.alert.suppression.docs_count"] == folded * 10  # each firing holds its 10 attempts
    assert s["soc.alert.suppression.start"].startswith("2026-05-28T20:28")  # the 51st source's first attempt
    assert f"{folded} keys" in s["soc.alert.reason"]
    # a re-ingest upserts the same alerts with the same counts
    _ingest(pcap, db)
    again = _ssh_alerts(db)
    assert sorted(a["soc.alert.uuid"] for a in again) == sorted(a["soc.alert.uuid"] for a in alerts)
    assert [a for a in again if "soc.alert.storm.keys" in a][0]["soc.alert.storm.keys"] == folded
    # shown by the queue and by show
    from soc_cli.main import app

    out = CliRunner().invoke(app, ["alerts", "list", "--store", f"sqlite:///{db}", "--json", "--limit", "1000"])
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["storm_keys"], r["suppressed"]) for r in rows if "storm_keys" in r] == [(folded, folded)]
    out = CliRunner().invoke(app, ["alerts", "show", s["soc.alert.uuid"], "--store", f"sqlite:///{db}"])
    assert f"storm: {folded} keys, {folded} matches, {folded} per-key alerts folded" in out.stdout


def test_rule_setting_and_no_storm(tmp_path: Path) -> None:
    """`soc_storm` sets the threshold, window and field; `false` turns storms off; bad values are refused."""
    assert storm_spec(None) == DEFAULT and storm_spec({"soc_storm": False}) is None
    assert storm_spec({"soc_storm": {"keys": 3, "window": 10, "field": "source.ip"}}) == StormSpec(3, 10.0,
                                                                                                    "source.ip")
    for bad, word in (({"keys": 0}, "keys"), ({"window": "1m"}, "window"), ({"victim": 1}, "unknown"),
                      ("yes", "mapping")):
        with pytest.raises(ValueError, match=word):
            storm_spec({"soc_storm": bad})
    rule = RuleInfo("r1", "Probe", storm=StormSpec(3, 10.0))
    quiet = RuleInfo("r2", "Probe", storm=None)
    for r, want in ((rule, 3 + 1), (quiet, 8)):
        folder = AlertFolder(300)
        uuids = {folder.add(r, {"@timestamp": f"2026-01-01T00:00:0{i}.000000Z", "source.ip": f"192.0.2.{i}",
                                "destination.ip": VICTIM}, T0 + i, {"source.ip": f"192.0.2.{i}"})["soc.alert.uuid"]
                 for i in range(8)}
        assert len(uuids) == want


def test_bad_storm_setting_is_a_located_rule_failure(tmp_path: Path) -> None:
    from correlator.sigma.detector import SigmaEngine

    rule = tmp_path / "r.yml"
    rule.write_text("title: T\nid: 11111111-1111-1111-1111-111111111111\nlogsource: {category: firewall}\n"
                    "detection: {sel: {destination.port: 22}, condition: sel}\nsoc_storm: {keys: -1}\n")
    engine = SigmaEngine.load([rule])
    assert len(engine.infos) == 0 and len(engine.failures) == 1
    assert "soc_storm.keys" in engine.failures[0].message
