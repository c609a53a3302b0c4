"""Policy detection: alerts from events the policy engine denied, folded per rule and flow, labelled by their inputs.

Severity and risk rise with the label; an alert's own label is the highest label of the events folded into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from correlator.alerts import AlertFolder
from correlator.policy.engine import PolicyEngine

Event = dict[str, Any]
SEVERITIES = ("low", "medium", "high", "critical")
GROUP = ("source.ip", "destination.ip", "destination.port")
TITLES = {
    "write-down": "Classified data flows to a zone accredited below its level",
    "cross-organization": "Cross-organization flow without a covering agreement",
    "caveat": "Caveated data reaches an organization outside the caveat",
    "protection": "Classified data on a channel its protection profile forbids",
    "expired-exception": "Flow relies on an expired policy exception",
}


@dataclass(frozen=True)
class PolicyRule:
    """The rule metadata alerts carry (the shape `correlator.alerts.build_alert` reads)."""

    id: str
    title: str
    description: str = ""
    level: str = "medium"
    tags: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    path: str = ""


def severity(rank: int, levels: int) -> tuple[str, int]:
    """(severity, risk score) for a label rank: the lowest level is low/21, the highest critical/99."""
    frac = rank / max(1, levels - 1)
    return SEVERITIES[round(frac * (len(SEVERITIES) - 1))], round(21 + 78 * frac)


def _epoch(ts: Any) -> float:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class PolicyDetector:
    """Pipeline detector: one alert per (rule, source, destination, port) per window, riskier with the label."""

    def __init__(self, engine: PolicyEngine, window: float = 300.0) -> None:
        self.engine = engine
        self.levels = engine.policy.levels
        self.folder = AlertFolder(window=window)
        path = engine.policy.path
        self.rules = {r: PolicyRule(f"soc-policy-{r}", t, f"{t} (policy {engine.policy.name})",
                                    tags=["soc.policy", f"soc.policy.{r}"], path=path) for r, t in TITLES.items()}
        self.watermark = 0.0

    def detect(self, events: list[Event]) -> list[Event]:
        out: dict[str, Event] = {}
        for ev in events:
            if "gov.policy.decision" not in ev:
                self.engine.enrich([ev])
            if ev["gov.policy.decision"] != "deny":
                continue
            ts = _epoch(ev.get("@timestamp"))
            self.watermark = max(self.watermark, ts)
            group = {f: ev[f] for f in GROUP if ev.get(f) is not None}
            for rule, reason in zip(ev["gov.policy.violations"], ev["gov.policy.reasons"], strict=True):
                alert = self.folder.add(self.rules[rule], ev, ts, group, reason)
                self._label(alert, ev)
                out[alert["soc.alert.uuid"]] = alert
        self.folder.expire(self.watermark - self.folder.window)
        return list(out.values())

    def flush(self) -> list[Event]:
        self.folder.open.clear()
        return []

    def _label(self, alert: Event, ev: Event) -> None:
        """Raise the alert's label to the event's if higher; severity and risk follow the label."""
        rank = max(int(ev.get("gov.label.rank", 0)), int(alert.get("gov.label.rank", 0)))
        lv = self.levels[rank]
        if alert.get("gov.label.ar") == lv.ar:
            return
        sev, risk = severity(rank, len(self.levels))
        alert.update({"gov.label.level": lv.name, "gov.label.ar": lv.ar, "gov.label.rank": rank,
                      "soc.alert.severity": sev, "soc.alert.risk_score": risk, "soc.alert.rule.level": sev})
        for f in ("gov.source.zone", "gov.destination.zone", "gov.source.organization",
                  "gov.destination.organization", "gov.service.id"):
            if f in ev:
                alert.setdefault(f, ev[f])
