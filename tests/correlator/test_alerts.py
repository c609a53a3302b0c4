"""Alerts through the real pipeline and store: shape, folding per rule and key, replay idempotence, CLI views."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.alerts import AlertFolder, attack_threat
from correlator.pipeline import Pipeline
from correlator.query import Query
from correlator.sigma import SHIPPED_RULES
from correlator.sigma.detector import SigmaDetector, SigmaEngine
from correlator.sigma.engine import RuleInfo
from correlator.sigma.loader import load_placeholders
from soc_cli.main import app

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def flow(sec: float, src: str, dst: str, dport: int, outcome: str = "success", packets: int = 10) -> dict:
    return {"@timestamp": (T0 + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "event.kind": "event",
            "event.category": ["network"], "event.dataset": "soc.flow", "source.ip": src, "destination.ip": dst,
            "source.port": 40000 + int(sec * 10) % 20000, "destination.port": dport, "network.transport": "tcp",
            "network.packets": packets, "event.outcome": outcome, "observer.name": "t"}


@pytest.fixture(scope="module")
def engine() -> SigmaEngine:
    return SigmaEngine.load([SHIPPED_RULES], "ecs", load_placeholders([SHIPPED_RULES]))


def run(store, engine: SigmaEngine, events: list[dict]):
    det = SigmaDetector(engine)
    stats = Pipeline(store, detectors=[det]).run(events)
    return stats, store.search_alerts(Query(), limit=1000)


def test_repeats_fold_per_rule_and_key(sqlite_store, engine: SigmaEngine) -> None:
    noisy = [flow(i, "10.0.0.5", "10.0.1.1", 23) for i in range(50)]  # telnet, one host, many times
    quiet = [flow(30, "10.0.0.6", "10.0.1.1", 23)]
    _, alerts = run(sqlite_store, engine, noisy + quiet)
    telnet = [a for a in alerts if a["soc.alert.rule.name"].startswith("Cleartext Remote Access")]
    by_src = {a["source.ip"]: a for a in telnet}
    assert set(by_src) == {"10.0.0.5", "10.0.0.6"}  # the noisy host did not silence the quiet one
    assert by_src["10.0.0.5"]["soc.alert.suppression.docs_count"] == 50
    assert by_src["10.0.0.6"]["soc.alert.suppression.docs_count"] == 1
    a = by_src["10.0.0.5"]
    assert a["soc.alert.suppression.start"] == noisy[0]["@timestamp"]
    assert a["soc.alert.suppression.end"] == noisy[-1]["@timestamp"]
    assert a["soc.alert.severity"] == "medium" and a["soc.alert.risk_score"] == 47
    assert a["soc.alert.workflow_status"] == "open" and a["soc.alert.status"] == "active"
    assert {"field": "source.ip", "value": "10.0.0.5"} in a["soc.alert.suppression.terms"]
    assert a["soc.alert.rule.threat"][0]["technique"][0]["id"] == "T1040"
    assert a["soc.alert.original_event.dataset"] == "soc.flow"
    assert len(a["soc.alert.ancestors"]) == 50 and all(len(x) == 32 for x in a["soc.alert.ancestors"])


def test_window_expiry_opens_a_new_alert(sqlite_store, engine: SigmaEngine) -> None:
    events = [flow(0, "10.0.0.5", "10.0.1.1", 23), flow(100, "10.0.0.5", "10.0.1.1", 23),
              flow(301, "10.0.0.5", "10.0.1.1", 23)]
    _, alerts = run(sqlite_store, engine, events)
    counts = sorted(a["soc.alert.suppression.docs_count"] for a in alerts)
    assert counts == [1, 2]  # 0 and 100 fold (window 300 s); 301 starts a new window


def test_replay_upserts_same_alerts(sqlite_store, engine: SigmaEngine) -> None:
    events = [flow(i, "198.18.0.9", "10.0.2.2", 22, packets=5) for i in range(12)]
    _, first = run(sqlite_store, engine, events)
    _, second = run(sqlite_store, engine, events)
    assert [a["soc.alert.uuid"] for a in first] == [a["soc.alert.uuid"] for a in second]
    assert any(a["soc.alert.rule.name"].startswith("SSH Brute Force") for a in first)
    brute = next(a for a in first if a["soc.alert.rule.name"].startswith("SSH Brute Force"))
    assert brute["soc.alert.suppression.docs_count"] == 10
    assert brute["destination.ip"] == "10.0.2.2" and brute["source.ip"] == "198.18.0.9"
    assert "event_count = 10" in brute["soc.alert.reason"]


def test_folder_keys_are_independent() -> None:
    rule = RuleInfo(id="r", title="R")
    f = AlertFolder(window=60)
    a1 = f.add(rule, {"@timestamp": "t1"}, 0, {"host.name": "a"}, "x")
    a2 = f.add(rule, {"@timestamp": "t1"}, 1, {"host.name": "b"}, "x")
    a3 = f.add(rule, {"@timestamp": "t2"}, 2, {"host.name": "a"}, "x")
    assert a1 is a3 and a1 is not a2 and a1["soc.alert.suppression.docs_count"] == 2
    assert a1["soc.alert.uuid"] != a2["soc.alert.uuid"]


def test_attack_threat_from_tags() -> None:
    t = attack_threat(["attack.credential_access", "attack.t1110.001", "cve.2020-1"])
    assert t[0]["tactic"][0]["name"] == "Credential Access"
    assert t[0]["technique"][0]["id"] == "T1110.001"
    assert attack_threat(["cve.2020-1"]) == []


def test_alerts_cli_list_and_show(sqlite_store, engine: SigmaEngine, soc_env: Path) -> None:
    events = ([flow(i, "10.0.0.5", "10.0.1.1", 23) for i in range(3)]
              + [flow(i, "198.18.0.9", "10.0.2.2", 3389, packets=5) for i in range(10)])
    run(sqlite_store, engine, events)
    uri = sqlite_store.uri
    r = CliRunner().invoke(app, ["alerts", "list", "--store", uri, "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows and rows[0]["severity"] == "high"  # riskiest first
    assert [x["risk_score"] for x in rows] == sorted((x["risk_score"] for x in rows), reverse=True)
    assert {"id", "rule_id", "title", "severity", "risk_score", "count", "source.ip"} <= set(rows[0])
    r = CliRunner().invoke(app, ["alerts", "list", "--store", uri, "--json", "--severity", "high"])
    assert all(json.loads(x)["severity"] in ("high", "critical") for x in r.stdout.splitlines())
    r = CliRunner().invoke(app, ["alerts", "show", rows[0]["id"], "--store", uri])
    assert r.exit_code == 0 and "reason:" in r.stdout and "source.ip = 198.18.0.9" in r.stdout
    r = CliRunner().invoke(app, ["alerts", "show", "nope", "--store", uri])
    assert r.exit_code == 1
    r = CliRunner().invoke(app, ["alerts", "list", "--store", uri, "--severity", "bad"])
    assert r.exit_code == 2
