"""Alerts: Elastic-Security-shaped flat documents in ``soc.alert.*``, and folding of repeats per rule and group key.

Folding: the first match of a rule for a group key opens an alert whose window starts at that event's time; later
matches of the same rule *and the same key* within ``window`` seconds (event time) update that alert (count,
end, ancestors) instead of adding one. Keys are independent: a noisy host never silences another. The alert uuid
is sha256(rule id, group key, window start), so a replay of the same events upserts the same alerts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from correlator.events import to_utc_iso

SEVERITY = {"informational": "low", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
RISK = {"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}  # Elastic's defaults per severity
# Fields that identify "who" in an event: the default group key of a base rule (those present are used).
GROUP_FIELDS = ("host.name", "source.ip", "destination.ip", "user.name", "Computer", "winlog.computer_name")
# Key fields of the triggering event copied under soc.alert.original_event.
ORIGINAL_FIELDS = ("event.id", "event.dataset", "event.code", "event.action", "event.category", "event.module",
                   "@timestamp", "log.file.path", "observer.name")
MAX_ANCESTORS = 100
# Fields analysts own (correlator.triage): a detector re-writing an alert (more matches folded in, a replay) keeps
# them as stored; see `keep_workflow`.
WORKFLOW_FIELDS = (
    "soc.alert.workflow_status", "soc.alert.workflow_reason", "soc.alert.workflow_comment",
    "soc.alert.workflow_updated_at", "soc.alert.assignees", "soc.alert.notes", "soc.alert.history",
    "soc.alert.created", "soc.alert.acknowledged_at", "soc.alert.closed_at", "soc.alert.time_to_ack",
    "soc.alert.time_to_close",
)
# Policy placement copied from the triggering event (filters and stats by organization and zone).
PLACEMENT_FIELDS = ("gov.source.organization", "gov.destination.organization", "gov.source.zone",
                    "gov.destination.zone")

_TACTICS = {
    "reconnaissance", "resource_development", "initial_access", "execution", "persistence", "privilege_escalation",
    "defense_evasion", "credential_access", "discovery", "lateral_movement", "collection", "command_and_control",
    "exfiltration", "impact",
}
_TECH = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.I)


@lru_cache(maxsize=4096)
def _attack_ids(tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ATT&CK tactic names and technique ids of a rule's tags (read once per rule, not per alert)."""
    tactics = tuple(t.split(".", 1)[1] for t in tags
                    if t.lower().startswith("attack.") and t.split(".", 1)[1] in _TACTICS)
    return tactics, tuple(m.group(1).upper() for t in tags if (m := _TECH.match(t)))


def attack_threat(tags: Iterable[str]) -> list[dict[str, Any]]:
    """ATT&CK tactics and techniques from Sigma tags (``attack.t1059.001``, ``attack.execution``)."""
    tactics, techniques = _attack_ids(tuple(tags))
    if not tactics and not techniques:
        return []
    return [{
        "framework": "MITRE ATT&CK",
        "tactic": [{"name": t.replace("_", " ").title(), "reference": f"https://attack.mitre.org/tactics/{t}"}
                   for t in tactics],
        "technique": [{"id": t, "reference": "https://attack.mitre.org/techniques/" + t.replace(".", "/")}
                      for t in techniques],
    }]


def techniques(tags: Iterable[str]) -> list[str]:
    return [m.group(1).upper() for t in tags if (m := _TECH.match(t))]


def alert_uuid(rule_id: str, key: tuple, window_start: str) -> str:
    raw = json.dumps([rule_id, list(key), window_start], separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def group_of(event: dict[str, Any], fields: Iterable[str] = GROUP_FIELDS) -> dict[str, Any]:
    return {f: event[f] for f in fields if event.get(f) is not None}


def group_key(group: dict[str, Any]) -> tuple:
    """Hashable, order-independent group key."""
    return tuple(sorted((k, _hv(v)) for k, v in group.items()))


@lru_cache(maxsize=65536)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _hv(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hv(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def keep_workflow(new: dict[str, Any], old: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """`new` (a detector's version of an alert) with the workflow fields of `old` (the stored one) kept; a new
    alert gets `soc.alert.created` = `now` (when it was first stored: the start of its timers)."""
    if old is None:
        new.setdefault("soc.alert.created", now)
        return new
    new.update({f: old[f] for f in WORKFLOW_FIELDS if f in old})
    new.setdefault("soc.alert.created", old.get("@timestamp") or now)
    return new


def build_alert(
    rule: Any,
    event: dict[str, Any],
    group: dict[str, Any],
    start: str,
    reason: str | None,
    events: list[dict[str, Any]] | None = None,
    key: tuple | None = None,
) -> dict[str, Any]:
    """A new alert for ``rule`` (a RuleInfo) triggered by ``event`` (the last of ``events``); the default reason
    names the rule and the event."""
    events = events or [event]
    level = (rule.level or "medium").lower()
    if reason is None:
        reason = highlight_reason(rule, event) or f"{rule.title}: event {event.get('event.id', '?')}"
    alert: dict[str, Any] = {
        "@timestamp": event.get("@timestamp") or start,
        "event.kind": "signal",
        "soc.alert.uuid": alert_uuid(rule.id, group_key(group) if key is None else key, start),
        "soc.alert.status": "active",
        "soc.alert.workflow_status": "open",
        "soc.alert.severity": SEVERITY.get(level, "medium"),
        "soc.alert.risk_score": RISK.get(level, 47),
        "soc.alert.reason": reason,
        "soc.alert.rule.uuid": rule.id,
        "soc.alert.rule.name": rule.title,
        "soc.alert.rule.description": rule.description,
        "soc.alert.rule.tags": list(rule.tags),
        "soc.alert.rule.references": list(rule.references),
        "soc.alert.rule.level": level,
        "soc.alert.rule.path": rule.path,
        "soc.alert.rule.threat": attack_threat(rule.tags),
        "soc.alert.ancestors": [e["event.id"] for e in events if e.get("event.id")][:MAX_ANCESTORS],
        "soc.alert.suppression.docs_count": len(events),
        "soc.alert.suppression.start": start,
        "soc.alert.suppression.end": event.get("@timestamp") or start,
        "soc.alert.suppression.terms": [{"field": k, "value": v} for k, v in group.items()],
        "soc.alert.assignees": [],
        "soc.alert.notes": [],
    }
    for f in ORIGINAL_FIELDS:
        if event.get(f) is not None:
            alert[f"soc.alert.original_event.{f.removeprefix('event.')}"] = event[f]
    for f, v in group.items():
        alert[f] = v
    for f in getattr(rule, "alert_fields", ()):
        if event.get(f) is not None:
            alert[f] = event[f]
    ips = [v for v in (*group.values(), event.get("source.ip"), event.get("destination.ip"))
           if isinstance(v, str) and _is_ip(v)]
    if ips:
        alert["related.ip"] = list(dict.fromkeys(ips))
    for f in PLACEMENT_FIELDS:
        if event.get(f) is not None:
            alert[f] = event[f]
    if not getattr(rule, "indicators", True):
        alert["soc.alert.rule.indicators"] = False  # sharing leaves its observables out
    raise_label(alert, events)
    return alert


def highlight_reason(rule: Any, event: dict[str, Any]) -> str | None:
    """The reason of a rule with ``soc_alert_fields``: its title and those fields' values in the event."""
    fields = getattr(rule, "alert_fields", ())
    parts = [f"{f.rsplit('.', 1)[-1]}={_show(event[f])}" for f in fields if event.get(f) is not None]
    return f"{rule.title}: {', '.join(parts)}" if parts else None


def _show(v: Any) -> str:
    return " ".join(map(str, v)) if isinstance(v, list) else str(v)


def raise_label(alert: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The alert's classification is the highest of its inputs (`gov.label.rank`, which clearance filters on)."""
    for e in events:
        rank = e.get("gov.label.rank")
        if isinstance(rank, int) and rank > alert.get("gov.label.rank", -1):
            alert["gov.label.rank"], alert["gov.label.level"] = rank, e.get("gov.label.level")


class AlertFolder:
    """Folds repeated matches per (rule, group key) within ``window`` seconds of event time into one alert."""

    def __init__(self, window: float = 300.0, max_open: int = 100_000) -> None:
        from correlator.storm import StormFolder  # storms: a rule's keys exploding fold into one alert

        self.window = window
        self.max_open = max_open
        self.open: OrderedDict[tuple, tuple[float, dict[str, Any]]] = OrderedDict()
        self.storms = StormFolder(window)

    def add(self, rule: Any, event: dict[str, Any], ts: float, group: dict[str, Any], reason: str | None = None,
            events: list[dict[str, Any]] | None = None, key: tuple | None = None) -> dict[str, Any]:
        """Fold a match in; returns the new or updated alert (to upsert). ``key``: ``group_key(group)`` when the
        caller has it already."""
        gkey = group_key(group) if key is None else key
        k = (rule.id, gkey)
        cur = self.open.get(k)
        if cur is not None and cur[0] <= ts < cur[0] + self.window:
            alert = cur[1]
            batch = events or [event]
            alert["soc.alert.suppression.docs_count"] += len(batch)
            end = event.get("@timestamp")
            if end and end > alert["soc.alert.suppression.end"]:
                alert["soc.alert.suppression.end"] = end
                alert["@timestamp"] = end
            anc = alert["soc.alert.ancestors"]
            raise_label(alert, batch)
            for e in batch:
                if len(anc) < MAX_ANCESTORS and e.get("event.id") and e["event.id"] not in anc:
                    anc.append(e["event.id"])
            if getattr(rule, "alert_fields", ()) and reason is None:  # the newest values (a flood's counts)
                alert.update({f: event[f] for f in rule.alert_fields if event.get(f) is not None})
                alert["soc.alert.reason"] = highlight_reason(rule, event) or alert["soc.alert.reason"]
            self.open.move_to_end(k)
            return alert
        storm = self.storms.fold(rule, event, ts, gkey, events, reason)
        if storm is not None:
            return storm
        start = (events[0] if events else event).get("@timestamp") or to_utc_iso(ts)
        alert = build_alert(rule, event, group, start, reason, events, gkey)
        self.open[k] = (ts, alert)
        self.open.move_to_end(k)
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)
        return alert

    def expire(self, watermark: float) -> None:
        """Forget alerts whose window ended before ``watermark`` (event time)."""
        for k in [k for k, (t, _) in self.open.items() if t + self.window <= watermark]:
            del self.open[k]
        self.storms.expire(watermark)


# --- alerts from the tools SOCs already run: Suricata EVE `alert` records, Zeek `notice` records -------------------

SURICATA_SEVERITY = {1: "high", 2: "medium", 3: "low"}  # Suricata: 1 is the most severe; 4+ (rare) are low
ZEEK_NOTICE_LEVEL = {  # Zeek notices carry no severity: soc's reading of the shipped notice types
    "HTTP::SQL_Injection_Attacker": "high", "HTTP::SQL_Injection_Victim": "high", "Intel::Notice": "high",
    "SSH::Password_Guessing": "medium", "FTP::Bruteforcing": "medium", "Scan::Port_Scan": "medium",
    "Scan::Address_Scan": "medium", "SSH::Login_By_Password_Guesser": "high", "SSL::Invalid_Server_Cert": "low",
    "SSL::Certificate_Expired": "low", "Weird::Activity": "low", "CaptureLoss::Too_Much_Loss": "low",
}
ZEEK_ALARM_ACTIONS = ("Notice::ACTION_ALARM", "Notice::ACTION_EMAIL", "Notice::ACTION_PAGE")


class SensorRule:
    """A Suricata signature or Zeek notice type, in the shape build_alert reads (RuleInfo's fields)."""

    def __init__(self, rule_id: str, title: str, level: str, category: str | None, product: str) -> None:
        self.id, self.title, self.level = rule_id, title, level
        self.description = f"{product}: {title}" + (f" ({category})" if category else "")
        self.tags = [f"soc.sensor.{product}", *([f"{product}.category.{category}"] if category else [])]
        self.references: list[str] = []
        self.path = product


def sensor_rule(event: dict[str, Any]) -> SensorRule | None:
    """The rule of a Suricata alert or Zeek notice event (sensors.logs), None for any other event."""
    if event.get("event.kind") != "alert":
        return None
    module, name, category = event.get("event.module"), event.get("rule.name"), event.get("rule.category")
    if module == "suricata" and (name or event.get("rule.id")):
        sev = event.get("event.severity")
        level = SURICATA_SEVERITY.get(sev, "low") if isinstance(sev, int) else "medium"
        sid = f"suricata:{event.get('rule.gid', 1)}:{event.get('rule.id', name)}"
        return SensorRule(sid, name or sid, level, category, "suricata")
    if module == "zeek" and name:
        level = ZEEK_NOTICE_LEVEL.get(name, "medium")
        if any(a in (event.get("zeek.notice.actions") or ()) for a in ZEEK_ALARM_ACTIONS) and level != "critical":
            level = "high"
        return SensorRule(f"zeek:{name}", name, level, category, "zeek")
    return None


class SensorAlertDetector:
    """Suricata EVE alerts and Zeek notices become soc alerts in the same queue: one rule per signature / notice
    type, severity mapped from theirs, folded per (rule, source, destination) like soc's own, labelled with the
    highest `gov.label` of the events folded in (the policy enriched them before detection)."""

    def __init__(self, window: float = 300.0) -> None:
        self.folder = AlertFolder(window)
        self.rules: dict[str, SensorRule] = {}
        self.watermark = 0.0

    def detect(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for ev in events:
            rule = sensor_rule(ev)
            if rule is None:
                continue
            rule = self.rules.setdefault(rule.id, rule)
            ts = _epoch(ev.get("@timestamp"))
            self.watermark = max(self.watermark, ts)
            reason = ev.get("message") or f"{rule.title}: event {ev.get('event.id', '?')}"
            alert = self.folder.add(rule, ev, ts, group_of(ev, ("source.ip", "destination.ip")), reason)
            out[alert["soc.alert.uuid"]] = alert
        self.folder.expire(self.watermark - self.folder.window)
        return list(out.values())

    def flush(self) -> list[dict[str, Any]]:
        self.folder.open.clear()
        return []


def _epoch(ts: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
