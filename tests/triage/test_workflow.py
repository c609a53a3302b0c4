"""The alert workflow on both stores: transitions as the issue lists them, history and audit, timers, a detector's
re-write that keeps the analysts' fields, and concurrent analysts who lose nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from correlator import triage
from correlator.alerts import SensorAlertDetector
from correlator.gate import open_gate
from correlator.pipeline import Pipeline
from correlator.policy import load_policy
from correlator.query import Query
from sensors.logs import LogReader, suricata_event

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "rules" / "policy" / "national-backbone.yml")
EVE = Path(__file__).parent / "data" / "suricata-eve-alert.json"
# The table, written out: (status, action) -> new status; every other pair is refused.
ALLOWED = {
    ("open", "ack"): "acknowledged", ("open", "start"): "in-progress", ("open", "close"): "closed",
    ("acknowledged", "start"): "in-progress", ("acknowledged", "close"): "closed",
    ("in-progress", "close"): "closed", ("closed", "reopen"): "open",
}


def _change(action: str, at: str = "2030-01-01T00:10:00.000000Z", actor: str = "soc-analyst", **kw) -> triage.Change:
    if action == "close":
        kw.setdefault("reason", "true-positive")
    return triage.Change(action, actor, at, **kw)


@pytest.mark.parametrize("status", triage.STATUSES)
@pytest.mark.parametrize("action", list(triage.TRANSITIONS))
def test_transitions_follow_the_table(status, action):
    alert = {"soc.alert.uuid": "a", "soc.alert.workflow_status": status, "soc.alert.created": "2030-01-01T00:00:00Z"}
    if (status, action) in ALLOWED:
        new = triage.apply(alert, _change(action))
        assert new["soc.alert.workflow_status"] == ALLOWED[status, action]
        assert new["soc.alert.history"] == [{"at": "2030-01-01T00:10:00.000000Z", "by": "soc-analyst",
                                             "action": action, "from": status, "to": ALLOWED[status, action],
                                             **({"reason": "true-positive"} if action == "close" else {})}]
    else:
        with pytest.raises(triage.Refused, match=f"the alert is {status}"):
            triage.apply(alert, _change(action))


def test_close_needs_a_known_reason_and_timers_count_from_creation():
    alert = {"soc.alert.uuid": "a", "soc.alert.created": "2030-01-01T00:00:00.000000Z"}
    with pytest.raises(triage.Refused, match="close needs a reason"):
        triage.apply(alert, triage.Change("close", "x", "2030-01-01T00:01:00Z", reason="meh"))
    a = triage.apply(alert, _change("ack", at="2030-01-01T00:02:30.000000Z"))
    a = triage.apply(a, _change("start", at="2030-01-01T00:05:00.000000Z"))
    a = triage.apply(a, _change("close", at="2030-01-01T01:00:00.000000Z", comment="scanner of the lab"))
    assert (a["soc.alert.time_to_ack"], a["soc.alert.time_to_close"]) == (150.0, 3600.0)
    assert a["soc.alert.workflow_reason"] == "true-positive" and a["soc.alert.workflow_comment"] == "scanner of the lab"
    a = triage.apply(a, _change("reopen", at="2030-01-01T02:00:00.000000Z"))
    assert "soc.alert.time_to_close" not in a and a["soc.alert.time_to_ack"] == 150.0  # the first response stays
    a = triage.apply(a, _change("close", at="2030-01-01T03:00:00.000000Z", reason="duplicate"))
    assert a["soc.alert.time_to_close"] == 3 * 3600.0
    assert [h["action"] for h in a["soc.alert.history"]] == ["ack", "start", "close", "reopen", "close"]


def _ingest(store, paths=(EVE,)) -> list[dict]:
    events = [e for p in paths for e in LogReader(str(p), "suricata-eve").events()]
    Pipeline(store, detectors=[SensorAlertDetector()]).run(events)
    _refresh(store)
    return store.search_alerts(Query(), 100)


def _refresh(store) -> None:
    if hasattr(store, "refresh"):
        store.refresh()


def test_workflow_survives_the_detector_rewriting_the_alert(any_store):
    """More matches folded into an alert (same uuid) update the count, never the status, assignee, history or
    timers an analyst set."""
    store, _ = any_store
    [alert] = _ingest(store)
    gate = open_gate(store, POLICY, "soc-admin")
    uuid = alert["soc.alert.uuid"]
    for change in (_change("ack", actor="soc-admin"), _change("assign", assignee="soc-lead"),
                   _change("note", comment="curl from a build host")):
        out = triage.change_alerts(gate, change, [uuid])
        assert [a["soc.alert.uuid"] for a in out.changed] == [uuid] and not out.refused
    before = store.get_alert(uuid)
    record = EVE.read_text()
    second = record.replace('"timestamp":"2022-01-11T18:57:14.198005', '"timestamp":"2022-01-11T18:58:14.198005') \
        .replace('"src_port":59010', '"src_port":59011')
    events = [suricata_event(__import__("json").loads(x)) for x in (record, second)]
    Pipeline(store, detectors=[SensorAlertDetector()]).run(events)  # a replay: both fold into the same alert
    _refresh(store)
    after = store.get_alert(uuid)
    assert after["soc.alert.suppression.docs_count"] == 2
    for f in ("soc.alert.workflow_status", "soc.alert.assignees", "soc.alert.notes", "soc.alert.history",
              "soc.alert.created", "soc.alert.acknowledged_at", "soc.alert.time_to_ack"):
        assert after[f] == before[f], f
    assert after["soc.alert.workflow_status"] == "acknowledged" and after["soc.alert.assignees"] == ["soc-lead"]
    audit = [e for e in store.audit_entries() if e["action"].startswith("alert-")]
    assert [(e["action"], e["actor"], e["details"]["alert"]) for e in audit] == [
        ("alert-ack", "soc-admin", uuid), ("alert-assign", "soc-analyst", uuid), ("alert-note", "soc-analyst", uuid)]


def test_concurrent_analysts_lose_nothing(any_store):
    """Analysts on their own connections: 6 notes at once all land in the history; two closes at once: one closes,
    the other is told the alert is closed (and by whom)."""
    store, connect = any_store
    [alert] = _ingest(store)
    uuid = alert["soc.alert.uuid"]
    results: dict[str, triage.Outcome] = {}

    def act(name: str, change: triage.Change) -> None:
        own = connect()
        try:
            results[name] = triage.change_alerts(open_gate(own, POLICY, "soc-admin"), change, [uuid])
        finally:
            own.close()

    def run_all(changes: dict[str, triage.Change]) -> None:
        threads = [threading.Thread(target=act, args=(n, c)) for n, c in changes.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run_all({f"n{i}": _change("note", actor=f"analyst{i}", comment=f"note {i}") for i in range(6)})
    assert all(len(r.changed) == 1 for r in results.values())
    doc = store.get_alert(uuid)
    assert sorted(n["text"] for n in doc["soc.alert.notes"]) == [f"note {i}" for i in range(6)]
    assert len(doc["soc.alert.history"]) == 6
    results.clear()
    run_all({"a": _change("close", actor="alice"), "b": _change("close", actor="bob")})
    won = [n for n, r in results.items() if r.changed]
    lost = [n for n, r in results.items() if r.refused]
    assert len(won) == 1 and len(lost) == 1, results
    winner = {"a": "alice", "b": "bob"}[won[0]]
    assert f"the alert is closed (close by {winner}" in results[lost[0]].refused[0][1]
    history = store.get_alert(uuid)["soc.alert.history"]
    assert [h["action"] for h in history].count("close") == 1 and history[-1]["by"] == winner


def test_an_analyst_cannot_change_an_alert_above_their_clearance(any_store):
    """Labelled top-secret (the policy's highest), the alert is unknown to a restricted analyst: refused, unchanged;
    a bulk change by query does not touch it either."""
    store, _ = any_store
    [alert] = _ingest(store)
    store.write_alerts([alert | {"gov.label.rank": 3, "gov.label.level": "top-secret"}])
    _refresh(store)
    analyst = open_gate(store, POLICY, "soc-analyst")
    out = triage.change_alerts(analyst, _change("ack"), [alert["soc.alert.uuid"]])
    assert not out.changed and out.refused == [(alert["soc.alert.uuid"], f"no alert with id {alert['soc.alert.uuid']}")]
    assert out.withheld == 1
    out = triage.change_alerts(analyst, _change("ack"), where="source.ip:10.0.2.15", statuses=["open"])
    assert out.matched == 0 and not out.changed and out.withheld == 1
    assert store.get_alert(alert["soc.alert.uuid"])["soc.alert.workflow_status"] == "open"
