"""The CLI over a store with alerts: bulk changes by query, refusals (exit 1), suppression counted the same in
every listing, stats with MTTA/MTTR, list filters and grouping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from correlator.store import open_store
from soc_cli.main import app

EVE = Path(__file__).parent / "data" / "suricata-eve-alert.json"
runner = CliRunner()
SCANNERS = ["198.51.100.7", "198.51.100.8", "203.0.113.9"]


@pytest.fixture
def store(tmp_path, monkeypatch, soc_env) -> str:
    """Suricata alerts: one curl alert per scanner address (three keys), ingested as a user would."""
    monkeypatch.setattr("correlator.audit.current_actor", lambda: "soc-admin")
    record = json.loads(EVE.read_text())
    log = tmp_path / "eve.json"
    log.write_text("".join(json.dumps(record | {"src_ip": ip, "flow_id": i}) + "\n" for i, ip in enumerate(SCANNERS)))
    uri = f"sqlite:///{tmp_path / 'soc.db'}"
    assert soc(uri, "logs", "ingest", str(log), "--format", "suricata-eve").exit_code == 0
    return uri


def soc(uri: str, *args: str):
    return runner.invoke(app, ["--store", uri, *args], env={"SOC_CLEARANCE": None, "SOC_CONFIG": None})


def rows(res) -> list[dict]:
    return [json.loads(x) for x in res.stdout.splitlines() if x.strip()]


def test_bulk_ack_by_query_then_refusals_exit_1(store):
    res = soc(store, "alerts", "ack", "--where", 'rule.name:"ET POLICY*" source.ip:198.51.100.0/24', "--status",
              "open", "--comment", "triaged in bulk")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "ack: 2 alert(s) changed, 0 refused"
    listed = {r["source.ip"]: r["workflow_status"] for r in rows(soc(store, "alerts", "list", "--json"))}
    assert listed == {"198.51.100.7": "acknowledged", "198.51.100.8": "acknowledged", "203.0.113.9": "open"}
    res = soc(store, "alerts", "ack", "--where", "source.ip:198.51.100.0/24", "--json")  # every status: refused
    assert res.exit_code == 1 and [r["result"] for r in rows(res)] == ["refused", "refused"]
    assert "the alert is acknowledged" in res.stderr
    res = soc(store, "alerts", "close", "--where", "source.ip:198.51.100.0/24", "--reason", "benign-positive",
              "--comment", "lab", "--json")
    assert res.exit_code == 0 and {r["to"] for r in rows(res)} == {"closed"}
    assert {r["source.ip"] for r in rows(soc(store, "alerts", "list", "--json"))} == {"203.0.113.9"}  # not closed
    closed = rows(soc(store, "alerts", "list", "--status", "closed", "--json"))
    assert len(closed) == 2
    shown = soc(store, "alerts", "show", closed[0]["id"])
    assert "History (2)" in shown.stdout and "benign-positive" in shown.stdout
    audit = [e for e in rows(soc(store, "audit", "list", "--json")) if e["action"].startswith("alert-")]
    assert [e["action"] for e in audit] == ["alert-ack"] * 2 + ["alert-close"] * 2
    assert soc(store, "alerts", "close", "no-such-id", "--reason", "other").exit_code == 1
    assert soc(store, "alerts", "close", closed[0]["id"], "--reason", "maybe").exit_code == 2


def test_assign_note_filters_group_and_stats(store):
    ids = {r["source.ip"]: r["id"] for r in rows(soc(store, "alerts", "list", "--json"))}
    assert soc(store, "alerts", "assign", ids["203.0.113.9"], ids["198.51.100.7"], "soc-lead").exit_code == 0
    assert soc(store, "alerts", "note", ids["203.0.113.9"], "owner asked").exit_code == 0
    assert {r["id"] for r in rows(soc(store, "alerts", "list", "--assignee", "soc-lead", "--json"))} == \
        {ids["203.0.113.9"], ids["198.51.100.7"]}
    assert [r["id"] for r in rows(soc(store, "alerts", "list", "--ip", "203.0.113.0/24", "--json"))] == \
        [ids["203.0.113.9"]]
    groups = rows(soc(store, "alerts", "list", "--group-by", "rule", "--json"))
    assert groups == [{"rule": "ET POLICY curl User-Agent Outbound", "alerts": 3, "events": 3, "max_risk": 47}]
    assert soc(store, "alerts", "start", ids["203.0.113.9"]).exit_code == 0
    assert soc(store, "alerts", "close", ids["203.0.113.9"], "--reason", "true-positive").exit_code == 0
    s = open_store(store)
    doc = s.get_alert(ids["203.0.113.9"])
    s.close()
    by = {r["assignee"]: r for r in rows(soc(store, "alerts", "stats", "--by", "assignee", "--json"))}
    assert by["soc-lead"]["alerts"] == 2 and by["soc-lead"]["closed"] == 1 and by["unassigned"]["open"] == 1
    assert by["soc-lead"]["mtta_s"] == doc["soc.alert.time_to_ack"]  # the start was its first response
    assert by["soc-lead"]["mttr_s"] == doc["soc.alert.time_to_close"] and by["all"]["closed_n"] == 1


def test_suppression_hides_counts_identically_and_ends(store):
    res = soc(store, "alerts", "suppress", "--rule", "ET POLICY curl User-Agent Outbound", "--where",
              "source.ip=198.51.100.7", "--for", "24h", "--reason", "authorised scanner", "--json")
    assert res.exit_code == 0, res.stderr
    sid = rows(res)[0]["id"]
    line = f"suppressed {sid}: 1 alerts (1 events) of 'ET POLICY curl User-Agent Outbound' where source.ip=198.51.100.7"
    listed = soc(store, "alerts", "list", "--json")
    assert {r["source.ip"] for r in rows(listed)} == {"198.51.100.8", "203.0.113.9"}
    stats = soc(store, "alerts", "stats", "--json")
    for res in (listed, stats):
        assert line in res.stderr, res.stderr
    assert rows(stats)[-1]["suppressed"] == 1
    [sup] = rows(soc(store, "alerts", "suppressions", "--json"))
    assert (sup["alerts"], sup["events"], sup["active"], sup["by"]) == (1, 1, True, "soc-admin")
    assert soc(store, "alerts", "suppress", "--rule", "nope", "--where", "source.ip=1.2.3.4",
               "--reason", "x").exit_code == 2
    assert soc(store, "alerts", "unsuppress", sid).exit_code == 0
    assert len(rows(soc(store, "alerts", "list", "--json"))) == 3
    assert soc(store, "alerts", "suppressions", "--json").stdout == ""
    [gone] = rows(soc(store, "alerts", "suppressions", "--all", "--json"))
    assert gone["removed_by"] == "soc-admin" and gone["active"] is False
    actions = [e["action"] for e in rows(soc(store, "audit", "list", "--json"))]
    assert actions.count("alert-suppress") == 1 and actions.count("alert-unsuppress") == 1
