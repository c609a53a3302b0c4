"""The actions that read and change stored data, on a store seeded by the real pipeline (demo capture): enrich
against the policy file's own CIDRs, search against the store filtered in Python, alert/incident updates through
triage (history, audit, idempotent), evidence, STIX and the CERT package (hashes recomputed, labels, clearance)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import zipfile
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import IP
from scapy.utils import rdpcap

from correlator.query import Query
from playbooks.actions import REGISTRY, ActionError
from soc_cli.common import SHIPPED_POLICY
from tests.playbooks.actions_world import BRUTE, DNS, SCAN, context, seeded


@pytest.fixture
def ctx(tmp_path_factory, tmp_path):
    return context(seeded(tmp_path_factory.getbasetemp()), tmp_path)


def test_enrich_places_addresses_as_the_policy_file_says(ctx):
    (ctx.home / "threat-lists").mkdir()
    (ctx.home / "threat-lists" / "scanners.txt").write_text("# local list\n203.0.113.64/30\n")
    out = REGISTRY["enrich"]().run(ctx, {"alert": SCAN}).outputs["addresses"]
    zones = yaml.safe_load(SHIPPED_POLICY.read_text())["zones"]
    for row in out:
        ip = ipaddress.ip_address(row["ip"])
        best = max((z for z in zones for c in z.get("cidrs", []) if ip in ipaddress.ip_network(c)),
                   key=lambda z: max(ipaddress.ip_network(c).prefixlen for c in z["cidrs"]
                                     if ip in ipaddress.ip_network(c)), default=None)
        assert row["zone"] == (best["id"] if best else "internet")
        assert row["organization"] == (best.get("organization") if best else None)
    assert [r["ip"] for r in out] == ["203.0.113.66", "172.16.10.10"]
    assert out[0]["threat_lists"] == ["scanners"] and out[1]["threat_lists"] == []


def test_search_returns_the_alerts_key_events_in_the_window(ctx):
    alert = ctx.store.get_alert(SCAN)
    res = REGISTRY["search"]().run(ctx, {"alert": SCAN, "window": "15m", "limit": 1000}).outputs
    everything = ctx.store.search_events(Query(()), 100000)
    ips = {alert["source.ip"], alert["destination.ip"]}
    truth = {e["event.id"] for e in everything if ips & set(e.get("related.ip") or [])}
    assert res["events"] and set(res["event_ids"]) <= truth
    assert set(alert["soc.alert.ancestors"]) <= set(res["event_ids"])


def test_alert_update_goes_through_triage_once(ctx):
    action, args = REGISTRY["alert.update"](), {"alert": SCAN, "status": "ack", "assignee": "soc-lead",
                                                "note": "contained by playbook"}
    assert action.plan(ctx, args)["alert"] == SCAN
    assert ctx.store.get_alert(SCAN).get("soc.alert.workflow_status", "open") == "open"  # plan changed nothing
    first, again = action.run(ctx, args), action.run(ctx, args)
    assert sorted(first.outputs["changed"]) == ["ack", "assign", "note"] and not first.outputs["skipped"]
    assert again.outputs["changed"] == [] and first.outputs["status"] == "acknowledged"
    stored = ctx.store.get_alert(SCAN)
    assert [h["action"] for h in stored["soc.alert.history"]] == ["assign", "note", "ack"]
    assert {h["by"] for h in stored["soc.alert.history"]} == {"soc-admin"}
    with pytest.raises(ActionError, match="close needs a reason"):
        action.run(ctx, {"alert": SCAN, "status": "close"})


def test_incident_update_opens_assigns_tasks_and_closes_once(ctx):
    action = REGISTRY["incident.update"]()
    args = {"alert": SCAN, "title": "scan of the portal", "assignee": "soc-lead", "task": "block the scanner"}
    first, again = action.run(ctx, args), action.run(ctx, args)
    assert first.outputs["changed"] == ["create", "assign", "task"]
    assert again.outputs == first.outputs | {"changed": [], "skipped": ["create", "assign", "task"]}
    n = first.outputs["incident"]
    closed = action.run(ctx, {"incident": n, "status": "closed", "reason": "true-positive"})
    assert closed.outputs["status"] == "closed"
    doc = ctx.store.get_incident(n)
    assert [t["text"] for t in doc["soc.incident.tasks"]] == ["block the scanner"]
    audited = [e for e in ctx.store.audit_entries() if str(e["action"]).startswith("incident-")]
    assert [e["action"] for e in audited] == ["incident-create", "incident-assigned", "incident-task-added",
                                              "incident-closed"]
    assert {e["actor"] for e in audited} == {"soc-admin"}


def test_evidence_pcap_holds_only_the_alerts_flows_and_carries_the_label(ctx):
    ctx.label_rank = 3
    res = REGISTRY["evidence.pcap"]().run(ctx, {"alert": BRUTE}).outputs
    alert = ctx.store.get_alert(BRUTE)
    pkts = rdpcap(res["output"])
    assert len(pkts) == res["packets"] > 0
    assert {frozenset((p[IP].src, p[IP].dst)) for p in pkts} == {frozenset((alert["source.ip"],
                                                                            alert["destination.ip"]))}
    assert hashlib.sha256(Path(res["output"]).read_bytes()).hexdigest() == res["sha256"]
    manifest = json.loads(Path(res["manifest"]).read_text())
    assert manifest["rank"] == 3 and manifest["level"] == "top-secret"  # the run's label is higher than the alert's


def test_share_stix_is_capped_by_the_readers_clearance(tmp_path_factory, tmp_path):
    seed = seeded(tmp_path_factory.getbasetemp())
    def shared(alert: str, folder: str) -> tuple[list[str], str]:
        out = REGISTRY["share.stix"]().run(context(seed, tmp_path / folder), {"alert": alert, "tlp": "green"}).outputs
        bundle = json.loads(Path(out["output"]).read_text())
        level = json.loads(Path(out["output"] + ".label.json").read_text())["gov.label.level"]
        return [o["pattern"] for o in bundle["objects"] if o["type"] == "indicator"], level

    # the scanner is shared; 172.16.10.10 is a ministry's portal: never shared
    assert shared(SCAN, "a") == (["[ipv4-addr:value = '203.0.113.66']"], "restricted")
    # the unsanctioned-resolver rule says soc_indicators: false, so 8.8.8.8 is not exported as malicious
    assert shared(DNS, "c") == ([], "public")
    low = context(seed, tmp_path / "b", clearance="public")
    with pytest.raises(ActionError, match="above the runner's clearance"):
        REGISTRY["share.stix"]().run(low, {"alert": BRUTE})


def test_escalate_packages_alert_evidence_and_stix_with_hashes(ctx):
    action, args = REGISTRY["escalate"](), {"alert": BRUTE}
    assert not Path(action.plan(ctx, args)["output"]).exists()
    first = action.run(ctx, args).outputs
    second = action.run(ctx, args).outputs
    assert first["sha256"] == second["sha256"]  # the same bytes: idempotent
    with zipfile.ZipFile(first["output"]) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        for f in manifest["files"]:
            assert hashlib.sha256(zf.read(f["name"])).hexdigest() == f["sha256"]
        assert {f["name"] for f in manifest["files"]} == {"subject.json", "alerts.json", "evidence.pcap",
                                                          "evidence.pcap.json", "indicators.stix.json"}
        assert json.loads(zf.read("subject.json"))["soc.alert.uuid"] == BRUTE
    alert = ctx.store.get_alert(BRUTE)
    assert manifest["gov.label.rank"] == alert["gov.label.rank"] == first["gov.label.rank"]


def test_evidence_pcap_past_its_step_timeout_fails_timed_out_and_leaves_no_file(ctx):
    """Through the engine's call with a tiny CACAO timeout: the step fails as timed out, nothing is written."""
    from playbooks.engine import _call

    out = ctx.home / "e.pcap"
    with pytest.raises(ActionError, match=r"^timed out after 1e-06 s"):
        _call(REGISTRY["evidence.pcap"](), ctx, {"alert": BRUTE, "output": str(out)}, 1e-6)
    assert not out.exists() and not Path(f"{out}.json").exists()
    ctx.deadline = ctx.timeout = None  # the same step with time to spare writes its file
    assert REGISTRY["evidence.pcap"]().run(ctx, {"alert": BRUTE, "output": str(out)}).outputs["packets"] > 0


def test_evidence_stopped_while_reading_the_capture_removes_its_partial_file(ctx, monkeypatch):
    """The deadline's check runs inside the capture read (here every record): stopping there leaves no pcap."""
    from correlator import evidence
    from playbooks.actions.base import TimedOut

    monkeypatch.setattr(evidence, "CHECK_EVERY", 1)
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 20:
            raise TimedOut("timed out after 0 s (reading the captures)")

    out = ctx.home / "mid.pcap"
    with pytest.raises(TimedOut):
        evidence.extract(ctx.gate, out, BRUTE, None, check)
    assert len(calls) == 21 and not out.exists() and not Path(f"{out}.json").exists()


@pytest.mark.parametrize("action", ["escalate", "share.stix", "search", "enrich"])
def test_data_actions_stop_at_a_spent_deadline_and_write_nothing(ctx, action):
    from playbooks.engine import _call

    out = ctx.home / "out" / "x"
    with pytest.raises(ActionError, match=r"^timed out after 1e-06 s"):
        _call(REGISTRY[action](), ctx, {"alert": SCAN, "output": str(out)}, 1e-6)
    assert not (ctx.home / "out").exists() or not any((ctx.home / "out").iterdir())
