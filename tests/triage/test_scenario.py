"""Issue 11 end to end, as an analyst runs it through the CLI: the demo capture through `soc sensor pcap` into a
fresh store → `alerts list` → ack / assign / note / close / suppress → `incident create` → `pcap extract
--incident` (compared with scapy's filter of the capture) → `timeline --incident` → `report incident`, on SQLite
and on the noida ES emulator. Each step's output is checked, and the audit log holds every change."""

from __future__ import annotations

import json

import pytest

from correlator.store import open_store
from tests.triage.test_evidence import capture, extracted, flows_of_alert, truth
from tests.triage.world import DEMO_PCAP, ingest, lines, soc

ANALYST = "soc-analyst"
RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@pytest.fixture(autouse=True)
def reader(monkeypatch):
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")


@pytest.fixture(params=["sqlite", "noida"])
def uri(request, tmp_path, es_servers):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'soc.db'}"
    return es_servers("noida").uri()


def ok(uri: str, *args: str):
    res = soc(uri, *args)
    assert res.exit_code == 0, f"soc {' '.join(args)}: {res.stderr}"
    return res


def show(uri: str, alert_id: str) -> dict:
    return lines(ok(uri, "alerts", "show", alert_id, "--json").stdout)[0]


def flat(doc: dict, prefix: str = "") -> dict:
    """Nested ECS JSON (`--json`) back to dotted keys."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_capture_to_report(uri, tmp_path):
    ingest(uri, DEMO_PCAP)

    # the queue: every alert open, riskiest first
    queue = lines(ok(uri, "alerts", "list", "--json").stdout)
    assert len(queue) >= 6 and {a["workflow_status"] for a in queue} == {"open"}
    assert [a["risk_score"] for a in queue] == sorted((a["risk_score"] for a in queue), reverse=True)
    first, second, third = queue[0]["id"], queue[1]["id"], queue[2]["id"]

    # the workflow on the first alert: ack, assign, note; the second closed as a false positive
    ok(uri, "alerts", "ack", first, "--comment", "looking")
    ok(uri, "alerts", "assign", first, ANALYST)
    ok(uri, "alerts", "note", first, "asked the owner")
    ok(uri, "alerts", "close", second, "--reason", "false-positive", "--comment", "lab traffic")
    a = flat(show(uri, first))
    assert a["soc.alert.workflow_status"] == "acknowledged" and a["soc.alert.assignees"] == [ANALYST]
    assert [(h["action"], h["by"]) for h in a["soc.alert.history"]] == [
        ("ack", "soc-admin"), ("assign", "soc-admin"), ("note", "soc-admin")]
    assert a["soc.alert.time_to_ack"] >= 0
    b = flat(show(uri, second))
    assert (b["soc.alert.workflow_status"], b["soc.alert.workflow_reason"]) == ("closed", "false-positive")
    assert second not in {r["id"] for r in lines(ok(uri, "alerts", "list", "--json").stdout)}
    assert [r["id"] for r in lines(ok(uri, "alerts", "list", "--status", "closed", "--json").stdout)] == [second]
    refused = soc(uri, "alerts", "ack", second)  # a closed alert cannot be acknowledged
    assert refused.exit_code == 1 and "closed" in refused.stderr

    # suppress the third alert's rule for its source: it leaves the queue, counted the same in list and stats
    c = flat(show(uri, third))
    key = f"source.ip={c['source.ip']}"
    ok(uri, "alerts", "suppress", "--rule", c["soc.alert.rule.uuid"], "--where", key, "--for", "24h",
       "--reason", "authorised scan")
    hidden = {q["id"] for q in queue if q["rule_id"] == c["soc.alert.rule.uuid"]
              and q.get("source.ip") == c["source.ip"] and q["id"] != second}
    listed = ok(uri, "alerts", "list", "--json")
    assert not hidden & {r["id"] for r in lines(listed.stdout)}
    assert f": {len(hidden)} alerts" in listed.stderr
    stats = lines(ok(uri, "alerts", "stats", "--by", "status", "--json").stdout)
    total = stats[-1]
    assert (total["status"], total["suppressed"], total["alerts"]) == ("all", len(hidden), len(queue) - len(hidden))
    assert (total["acknowledged"], total["closed"]) == (1, 1)
    sups = lines(ok(uri, "alerts", "suppressions", "--json").stdout)
    assert [s["where"] for s in sups] == [key]

    # an incident from the first two alerts: the higher severity and label of the two
    res = ok(uri, "incident", "create", "--title", "scenario", "--alerts", first, "--alerts", second, "--json")
    doc = lines(res.stdout)[0]
    inc = flat(doc)
    assert sorted(inc["soc.incident.alerts"]) == sorted([first, second])
    sev = max((a["soc.alert.severity"], b["soc.alert.severity"]), key=RANK.get)
    assert inc["soc.incident.severity"] == sev
    assert int(inc.get("gov.label.rank") or 0) == max(int(x.get("gov.label.rank") or 0) for x in (a, b))
    number = str(inc["soc.incident.id"])

    # its packets: exactly scapy's filter of the capture by the alerts' flows
    out = tmp_path / "incident.pcap"
    ex = lines(ok(uri, "pcap", "extract", "--incident", number, "-o", str(out), "--json").stdout)[0]
    store = open_store(uri)
    try:
        if hasattr(store, "refresh"):
            store.refresh()
        flows = [f for x in (a, b) for f in flows_of_alert(store, store.get_alert(x["soc.alert.uuid"]))]
    finally:
        store.close()
    want = truth(capture(DEMO_PCAP), list({f["event.id"]: f for f in flows}.values()))
    assert want and extracted(out) == want and ex["packets"] == len(want)

    # its timeline: the alerts' addresses, in time order
    tl = [flat(e) for e in lines(ok(uri, "timeline", "--incident", number, "--json").stdout)]
    assert tl and [e["@timestamp"] for e in tl] == sorted(e["@timestamp"] for e in tl)
    ips = {a["source.ip"], a["destination.ip"], b["source.ip"], b["destination.ip"]}
    assert all(ips & {e.get("source.ip"), e.get("destination.ip"), *(e.get("related.ip") or [])} for e in tl)

    # its report (json and markdown) names the incident and its alerts
    rep = tmp_path / "incident.json"
    ok(uri, "report", "incident", number, "--format", "json", "-o", str(rep))
    report = json.loads(rep.read_text())
    assert (report["kind"], report["incident"], report["title"]) == ("incident", int(number), "scenario")
    assert report["alerts"] | {"suppressed": 0} == {"acknowledged": 1, "closed": 1, "in-progress": 0, "open": 0,
                                                    "suppressed": 0, "total": 2}
    assert report["mttr_s"] == b["soc.alert.time_to_close"]
    assert report["label"]["rank"] == int(inc.get("gov.label.rank") or 0)  # the highest label of its inputs
    md = ok(uri, "report", "incident", number, "--format", "md").stdout
    assert "scenario" in md

    # every change is in the audit log, by the analyst who made it
    store = open_store(uri)
    try:
        actions = [(e["action"], e["actor"]) for e in store.audit_entries()]
    finally:
        store.close()
    for action in ("alert-ack", "alert-assign", "alert-note", "alert-close", "alert-suppress"):
        assert (action, "soc-admin") in actions, action
    assert any(act.startswith("incident") for act, _ in actions)
