"""Reports: one period's (daily, weekly) or one incident's alerts, timers, talkers, violations, incidents, compliance.

`build` gathers the report's data through the read gate (each input read once: clearance, withheld counts and
`read-classified` audit entries happen there) and tallies it with `correlator.triage.tally`, the home of the
`soc alerts stats` numbers. The report carries the highest label (`gov.label.rank`) of everything it read.
Rendering (Markdown, self-contained HTML with charts, JSON; English and Arabic) is `correlator.report_render`.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from correlator import incidents
from correlator.events import to_utc_iso
from correlator.gate import Gate, Read
from correlator.query import Query, Range, Term
from correlator.triage import SEVERITIES, STATUSES, suppression_counts, tally

KINDS = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
TOP = 10  # rows of top talkers
COMPLIANCE = "compliance.check"  # sensors.compliance.events.DATASET
PASSED, FAILED = "passed", "failed"


class ReportError(ValueError):
    """A report that cannot be made (unknown or withheld incident, bad period); the message says why."""


def period(kind: str, since: datetime | None = None, until: datetime | None = None,
           now: datetime | None = None) -> tuple[datetime, datetime]:
    """[since, until) of a daily or weekly report: the span ending at `until` (default now), or starting at
    `since` when only that is given."""
    span = KINDS[kind]
    if since and until:
        if since >= until:
            raise ReportError(f"--since {to_utc_iso(since)} is not before --until {to_utc_iso(until)}")
        return since, until
    if since:
        return since, since + span
    end = until or now or datetime.now(UTC)
    return end - span, end


def _rank(item: dict[str, Any]) -> int:
    return int(item.get("gov.label.rank") or 0)


def _sum_withheld(reads: list[Read]) -> int | None:
    counts = [r.withheld for r in reads if r.withheld is not None]
    return sum(counts) if counts else None


def _talkers(flows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Source addresses by bytes sent and received over their flows, the most first."""
    acc: dict[str, dict[str, Any]] = {}
    for f in flows:
        ip = f.get("source.ip")
        if not ip:
            continue
        r = acc.setdefault(ip, {"ip": ip, "flows": 0, "bytes": 0})
        r["flows"] += 1
        r["bytes"] += int(f.get("network.bytes") or 0)
    return sorted(acc.values(), key=lambda r: (-r["bytes"], -r["flows"], r["ip"]))[:TOP]


def _compliance(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per organization, the results of the latest scan of each (host, policy)."""
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    for ev in checks:
        key = (ev.get("host.name", ""), ev.get("soc.compliance.policy.id", ""))
        latest[key] = max(latest.get(key, ("", "")), (ev.get("@timestamp", ""), ev.get("soc.compliance.scan.id", "")))
    rows: dict[str, Counter] = {}
    for ev in checks:
        key = (ev.get("host.name", ""), ev.get("soc.compliance.policy.id", ""))
        if ev.get("soc.compliance.check.result") is None or \
                ev.get("soc.compliance.scan.id", "") != latest[key][1]:
            continue
        rows.setdefault(ev.get("organization.name") or "-", Counter())[ev["soc.compliance.check.result"]] += 1
    out = []
    for org, c in sorted(rows.items()):
        decided = c[PASSED] + c[FAILED]
        out.append({"organization": org, PASSED: c[PASSED], FAILED: c[FAILED], "other": sum(c.values()) - decided,
                    "score": round(100 * c[PASSED] / decided, 1) if decided else None})
    return out


def build(gate: Gate, kind: str, since: datetime | None = None, until: datetime | None = None,
          number: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The report's data: `kind` is daily, weekly (the period of `period`) or incident (`number`)."""
    now = now or datetime.now(UTC)
    reads: list[Read] = []
    incident = None
    if kind == "incident":
        found = gate.get_incident(int(number or 0))
        reads.append(found)
        if not found.items:
            raise ReportError(f"no incident {number} (unknown, or above your clearance)")
        incident = found.items[0]
        alerts_read = incidents.alerts_of(gate, incident)
        alerts = alerts_read.items
        stamps = sorted(a.get("@timestamp") or "" for a in alerts if a.get("@timestamp"))
        start = datetime.fromisoformat(stamps[0].replace("Z", "+00:00")) if stamps else now
        end = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")) + timedelta(microseconds=1) if stamps else now
        since, until = since or start, until or end
    else:
        since, until = period(kind, since, until, now)
        alerts_read = gate.search_alerts(Query((), since, until), sys.maxsize, f"report {kind}")
        alerts = alerts_read.items
    reads.append(alerts_read)
    sup = suppression_counts(gate, to_utc_iso(now))
    by = {b: tally(alerts, b, sup.ids) for b in ("severity", "organization", "rule", "day")}
    overall = by["severity"][-1]
    violations = [a for a in alerts if "soc.policy" in (a.get("soc.alert.rule.tags") or [])]
    flows = gate.search_events(Query((Range("network.bytes", gte=0),), since, until), sys.maxsize,
                               f"report {kind} top talkers")
    checks = gate.search_events(Query((Term("event.dataset", COMPLIANCE),), since, until), sys.maxsize,
                                f"report {kind} compliance")
    open_incidents = incidents.search(gate, status="open", limit=sys.maxsize)
    reads += [flows, checks, open_incidents]
    items = [*alerts, *flows.items, *checks.items, *open_incidents.items, *([incident] if incident else [])]
    rank = max(map(_rank, items), default=0)
    level = gate.policy.levels[rank]
    return {
        "kind": kind, "incident": incident.get(incidents.P + "id") if incident else None,
        "title": incident.get(incidents.P + "title") if incident else None,
        "since": to_utc_iso(since), "until": to_utc_iso(until), "generated": to_utc_iso(now),
        "reader": gate.reader.user, "clearance": gate.reader.level.name,
        "label": {"rank": rank, "level": level.name, "ar": level.ar},
        "withheld": _sum_withheld(reads),
        "alerts": {"total": overall["alerts"], "suppressed": overall["suppressed"],
                   **{s: overall[s] for s in STATUSES}},
        "mtta_s": overall["mtta_s"], "mttr_s": overall["mttr_s"],
        "by_severity": sorted(by["severity"][:-1], key=lambda r: -SEVERITIES.index(r["severity"])
                              if r["severity"] in SEVERITIES else 1), "by_organization": by["organization"][:-1],
        "by_rule": by["rule"][:-1], "by_day": by["day"][:-1],
        "top_talkers": _talkers(flows.items),
        "policy_violations": [{"rule": r["rule"], "alerts": r["alerts"]}
                              for r in tally(violations, "rule", sup.ids)[:-1]],
        "open_incidents": [{"id": i.get(incidents.P + "id"), "title": i.get(incidents.P + "title"),
                            "severity": i.get(incidents.P + "severity"), "assignee": i.get(incidents.P + "assignee"),
                            "alerts": len(i.get(incidents.P + "alerts") or [])} for i in open_incidents.items],
        "compliance": _compliance(checks.items),
    }
