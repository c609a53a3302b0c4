"""Scan results as flat ECS state events (`event.dataset: compliance.check`), and alerts on state changes."""

from __future__ import annotations

import hashlib
from typing import Any

from sensors.compliance.scanner import FAILED, PASSED, ScanResult

DATASET = "compliance.check"
OUTCOME = {PASSED: "success", FAILED: "failure"}
RISK = {"low": 21, "medium": 47, "high": 73, "critical": 99}  # Elastic Security's default risk per severity
CHANGE_RULE_ID = "soc-compliance-state-change"


def _iso(ts) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scan_id(scan: ScanResult, host: str) -> str:
    raw = f"{host}|{scan.policy.id}|{_iso(scan.started)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def to_events(scan: ScanResult, host: str, org: str | None) -> list[dict[str, Any]]:
    """One state event per check result; distinct per host, policy, scan and check."""
    ts, sid = _iso(scan.started), scan_id(scan, host)
    events = []
    for seq, res in enumerate(scan.results, 1):
        check = res.check
        ev: dict[str, Any] = {
            "@timestamp": ts,
            "event.kind": "state",
            "event.category": ["configuration"],
            "event.type": ["info"],
            "event.dataset": DATASET,
            "event.module": "compliance",
            "event.outcome": OUTCOME.get(res.status, "unknown"),
            "event.sequence": seq,
            "event.severity": RISK[check.severity],
            "host.name": host,
            "rule.id": str(check.id),
            "rule.name": check.title,
            "rule.ruleset": scan.policy.id,
            "rule.description": check.description,
            "soc.compliance.scan.id": sid,
            "soc.compliance.scan.root": scan.root,
            "soc.compliance.policy.id": scan.policy.id,
            "soc.compliance.policy.name": scan.policy.name,
            "soc.compliance.check.id": check.id,
            "soc.compliance.check.result": res.status,
            "soc.compliance.check.severity": check.severity,
        }
        if org:
            ev["organization.name"] = org
        if res.reason:
            ev["event.reason"] = res.reason
            ev["soc.compliance.check.reason"] = res.reason
        if res.evidence:
            ev["soc.compliance.check.evidence"] = list(res.evidence)
            ev["soc.compliance.check.evidence_more"] = res.evidence_more
        if check.remediation:
            ev["soc.compliance.check.remediation"] = check.remediation
        if check.references:
            ev["rule.reference"] = " ".join(check.references)
        for framework, ids in check.compliance.items():
            ev[f"soc.compliance.check.compliance.{framework.replace('.', '_')}"] = list(ids)
        events.append(ev)
    return events


class StateChangeDetector:
    """Raises an alert only when a check's result differs from the previous scan of the same host and policy.

    `previous` maps check id -> result of that scan (read from the store by the caller); with no previous scan,
    the first scan is the baseline and raises nothing.
    """

    def __init__(self, previous: dict[int, str], previous_scan: str | None = None) -> None:
        self.previous = previous
        self.previous_scan = previous_scan

    def detect(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        alerts = []
        for ev in events:
            if ev.get("event.dataset") != DATASET or not self.previous:
                continue
            before = self.previous.get(ev["soc.compliance.check.id"])
            now = ev["soc.compliance.check.result"]
            if before is None or before == now:
                continue
            alerts.append(self._alert(ev, before, now))
        return alerts

    def flush(self) -> list[dict[str, Any]]:
        return []

    def _alert(self, ev: dict[str, Any], before: str, now: str) -> dict[str, Any]:
        severity = ev["soc.compliance.check.severity"] if now == FAILED else "low"
        key = f"{CHANGE_RULE_ID}|{ev['host.name']}|{ev['rule.ruleset']}|{ev['rule.id']}|{ev['soc.compliance.scan.id']}"
        alert = {
            "@timestamp": ev["@timestamp"],
            "soc.alert.uuid": hashlib.sha256(key.encode()).hexdigest()[:32],
            "soc.alert.status": "active",
            "soc.alert.workflow_status": "open",
            "soc.alert.severity": severity,
            "soc.alert.risk_score": RISK[severity],
            "soc.alert.reason": (f"compliance check {ev['rule.id']} ({ev['rule.name']}) on {ev['host.name']} "
                                 f"changed from {before} to {now}"),
            "soc.alert.rule.uuid": CHANGE_RULE_ID,
            "soc.alert.rule.name": "Compliance check state changed",
            "soc.alert.rule.description": "A check's result differs from the previous scan of this host.",
            "soc.alert.rule.tags": ["compliance", f"policy:{ev['rule.ruleset']}"],
            "soc.alert.rule.references": [],
            "soc.alert.rule.level": severity,
            "soc.alert.rule.threat": [],
            "soc.alert.original_event.id": ev.get("event.id"),
            "soc.alert.original_event.dataset": DATASET,
            "soc.alert.ancestors": [ev.get("event.id")],
            "soc.compliance.check.previous_result": before,
            "soc.compliance.previous_scan.id": self.previous_scan,
        }
        for field in ("host.name", "organization.name", "rule.id", "rule.name", "rule.ruleset",
                      "soc.compliance.check.id", "soc.compliance.check.result", "soc.compliance.scan.id",
                      "soc.compliance.check.evidence", "soc.compliance.check.evidence_more"):
            if field in ev:
                alert[field] = ev[field]
        return alert
